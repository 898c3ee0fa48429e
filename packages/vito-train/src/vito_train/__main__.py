from vito_train.cli import app

app()
