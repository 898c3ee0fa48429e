"""The ``vito-train`` command line: run (train or resume), export, presets."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vito_train import __version__

app = typer.Typer(help="VITO pretraining of image encoders on curated video.", no_args_is_help=True,
                  add_completion=False)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-train {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
) -> None:
    """VITO pretraining of image encoders on curated video."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libav").setLevel(logging.ERROR)


@app.command()
def run(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="manifest.parquet (or its directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; an existing run there is resumed."),
    preset: str = typer.Option("paper-r50", "--preset", "-p", help="Preset name or a YAML file."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a config key: key=value (repeatable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a VITO encoder on the kept clips of a manifest (resumes from OUT/last.pt)."""
    from vito_train.checkpoint import CheckpointError
    from vito_train.config import ConfigError, resolve_config
    from vito_train.data.pairs import TrainingDataError
    from vito_train.loop import NonFiniteLossError, train

    try:
        config = resolve_config(preset, overrides)
        summary = train(config, manifest, out, progress=progress)
    except (ConfigError, TrainingDataError, CheckpointError, NonFiniteLossError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"vito-train run {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (uses last.pt) or a checkpoint .pt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file."),
    fmt: str = typer.Option("torchvision", "--format", "-f", help="torchvision | vito-encoder (adds pooling)."),
) -> None:
    """Export the online encoder's weights as safetensors."""
    from vito_train.checkpoint import CheckpointError
    from vito_train.export import export

    try:
        meta = export(run_dir, out, fmt)
    except (CheckpointError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"wrote {out}: {meta['arch']} step {meta['step']} ({fmt})")


@app.command()
def presets() -> None:
    """List the bundled presets."""
    from vito_train.config import preset_names

    for name in preset_names():
        typer.echo(name)
