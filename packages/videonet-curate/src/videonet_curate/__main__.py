from videonet_curate.cli import app

app()
