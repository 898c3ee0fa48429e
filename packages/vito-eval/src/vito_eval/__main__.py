from vito_eval.cli import app

app()
