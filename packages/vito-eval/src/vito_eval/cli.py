"""The ``vito-eval`` command line."""

from __future__ import annotations

import typer

from vito_eval import __version__

app = typer.Typer(help="Evaluate frozen image encoders (linear probe, kNN, transfer tasks).", no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-eval {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Evaluate frozen image encoders (linear probe, kNN, transfer tasks)."""
