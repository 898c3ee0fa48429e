"""The ``videonet-curate`` command line.

Exit codes: 0 finished with every row accounted for; 1 finished, but some rows failed (see the manifest's
``status``/``reason``); 2 bad arguments (missing/empty input, unwritable output, unknown model).
"""

from __future__ import annotations

import typer

from videonet_curate import __version__

app = typer.Typer(
    help="Curate video clips whose content matches ImageNet-1k's classes into a Parquet manifest.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videonet-curate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """VideoNet curation: fetch clips, label them with ImageNet-1k classes, write a manifest."""


# Command bodies live in their own modules; this file only wires them up.
from videonet_curate.build_cli import build_command  # noqa: E402

app.command("build")(build_command)
from videonet_curate.report_cli import publish_command, report_command, verify_command  # noqa: E402

app.command("report")(report_command)
app.command("publish")(publish_command)
app.command("verify")(verify_command)
from videonet_curate.samples import samples_app  # noqa: E402

app.add_typer(samples_app, name="samples")
