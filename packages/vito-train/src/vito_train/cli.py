"""The ``vito-train`` command line."""

from __future__ import annotations

import typer

from vito_train import __version__

app = typer.Typer(help="VITO pretraining of image encoders on curated video.", no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-train {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """VITO pretraining of image encoders on curated video."""
