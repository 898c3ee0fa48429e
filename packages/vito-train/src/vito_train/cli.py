"""The ``vito-train`` command line: run (train or resume), export, presets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from videonet_curate.uri import (
    StorageError,
    StorageOptionError,
    StorageOptions,
    is_uri,
    location,
    using_options,
)
from vito_train import __version__
from vito_train.exits import EXIT_PARTIAL, run_with_exit_codes, verbose_requested
from vito_train.outputs import OutputError, check_output_dir, check_output_file

app = typer.Typer(
    help="VITO pretraining of image encoders on curated video.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)
STORAGE_OPTION_HELP = (
    "key=value for object storage, repeatable: endpoint_url=http://HOST:PORT, region=..., anon=true, "
    "profile=...; credentials come from the AWS_* environment or ~/.aws, never from here."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-train {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
) -> None:
    """VITO pretraining of image encoders on curated video."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("libav").setLevel(logging.ERROR)


# Keys that only mean something for video: set explicitly with --images, they are an error (a preset's
# values are overridden: max_gap_s becomes 0).
VIDEO_ONLY_KEYS = ("max_gap_s", "decode_short_side", "frame_fps")


def reject_video_only_overrides(overrides: list[str]) -> None:
    from vito_train.config import ConfigError

    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in VIDEO_ONLY_KEYS and not (key == "max_gap_s" and value.strip() in ("0", "0.0")):
            raise ConfigError(
                f"--set {item}: {key} applies to video only; with --images the two views come from one "
                "image. Drop this --set, or train on video with --manifest/--cache"
            )


@app.command()
def run(
    ctx: typer.Context,
    manifest: str | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="manifest.parquet (or its directory), or their URI (s3://bucket/run): decode frames from the "
        "videos, which may themselves be URIs.",
    ),
    cache: str | None = typer.Option(
        None,
        "--cache",
        "-c",
        help="Frame cache from `vito-train prepare` (instead of --manifest; faster): a directory or a URI "
        "(s3://bucket/cache), read by byte ranges, never copied whole.",
    ),
    images: str | None = typer.Option(
        None,
        "--images",
        help="Train on still images instead: imagefolder:DIR, fashion-mnist:DIR or mnist:DIR "
        "(two views of one image).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; an existing run there is resumed."),
    preset: str = typer.Option("paper-r50", "--preset", "-p", help="Preset name or a YAML file."),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override a config key: key=value (repeatable)."
    ),
    monitor: str | None = typer.Option(
        None,
        "--monitor",
        help="Online kNN monitor on a labelled set (fashion-mnist:DIR, mnist:DIR, imagefolder:DIR): "
        "kNN-20 top-1 every monitor_every steps.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    storage_option: list[str] = typer.Option([], "--storage-option", help=STORAGE_OPTION_HELP),
) -> None:
    """Train a VITO encoder on the kept clips of a manifest, a frame cache or an image set (resumes
    from OUT/last.pt).

    Several GPUs or nodes: `torchrun --nproc_per_node N -m vito_train run ...` (batch_size is global).
    """
    from vito_train.checkpoint import CheckpointError
    from vito_train.config import ConfigError, resolve_config
    from vito_train.data.cache import CacheError
    from vito_train.data.image_sets import ImageSetError
    from vito_train.data.pairs import TrainingDataError
    from vito_train.distributed import DistributedConfigError
    from vito_train.loop import NonFiniteLossError, train

    def body() -> dict:
        if images is not None:
            reject_video_only_overrides(overrides)
        config = resolve_config(preset, overrides)
        storage = StorageOptions.parse(storage_option)
        check_output_dir(out, "--out")
        with using_options(storage):  # also for the clips of a manifest, in every DataLoader worker
            return train(
                config,
                location(manifest) if manifest else None,
                out,
                progress=progress,
                cache=cache,
                images=images,
                monitor=monitor,
                storage=storage,
            )

    input_errors = (
        ConfigError,
        TrainingDataError,
        CheckpointError,
        NonFiniteLossError,
        CacheError,
        DistributedConfigError,
        ImageSetError,
        OutputError,
        StorageOptionError,
        StorageError,
    )
    summary = run_with_exit_codes(
        body, input_errors=input_errors, console=console, program="vito-train", verbose=verbose_requested(ctx)
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        table = Table(title=f"vito-train run {out}")
        table.add_column("what")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)
    if summary.get("stopped_by_signal"):
        console.print(
            f"stopped by signal {summary['stopped_by_signal']} at step {summary['end_step']}; "
            f"{out}/last.pt is written: rerun the same command to resume",
            soft_wrap=True,
        )
        raise typer.Exit(128 + int(summary["stopped_by_signal"]))
    if summary.get("skipped_steps") or summary.get("dropped_samples"):
        console.print(
            f"finished, but {summary.get('skipped_steps', 0)} steps were skipped and "
            f"{summary.get('dropped_samples', 0)} samples dropped (clips that did not decode or loader "
            f"workers that died; see {out}/metrics.jsonl)",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def prepare(
    ctx: typer.Context,
    manifest: str | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="manifest.parquet (or its directory), or their URI: cache the kept clips' frames.",
    ),
    images: str | None = typer.Option(
        None,
        "--images",
        help="Cache an image set instead (a frame per image): imagefolder:DIR, fashion-mnist:DIR, mnist:DIR.",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Cache directory or URI (s3://bucket/cache); an unfinished one is resumed.",
    ),
    fps: float = typer.Option(8.0, "--fps", help="Frames kept per second of each clip."),
    short_side: int = typer.Option(
        256, "--short-side", help="Frames are scaled so their short side is this."
    ),
    quality: int = typer.Option(90, "--quality", help="JPEG quality."),
    clips_per_shard: int = typer.Option(
        64, "--clips-per-shard", help="Clips per tar shard (the unit of work)."
    ),
    workers: int = typer.Option(0, "--workers", "-j", help="Decoding processes (0 = all cores)."),
    storage_option: list[str] = typer.Option([], "--storage-option", help=STORAGE_OPTION_HELP),
) -> None:
    """Decode each kept clip (or image) once into a frame cache (JPEG tar shards, index) for `run --cache`."""
    from vito_train.data.prepare import prepare_command

    def body() -> int:
        options = StorageOptions.parse(storage_option)
        if not is_uri(out):
            check_output_dir(Path(out), "--out")
        with using_options(options):  # the manifest and its clips may be URIs too
            return prepare_command(
                location(manifest) if manifest else None,
                out,
                fps,
                short_side,
                quality,
                clips_per_shard,
                workers,
                images,
                options,
            )

    code = run_with_exit_codes(
        body,
        input_errors=(OutputError, StorageOptionError, StorageError),
        console=console,
        program="vito-train",
        verbose=verbose_requested(ctx),
    )
    if code:
        raise typer.Exit(code)


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="Run directory (uses last.pt) or a checkpoint .pt."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output file: .safetensors, or .pkl for --format detectron2."
    ),
    fmt: str = typer.Option(
        "torchvision",
        "--format",
        "-f",
        help="torchvision | vito-encoder (adds pooling) | detectron2 (MODEL.WEIGHTS pickle).",
    ),
) -> None:
    """Export the online encoder's weights (safetensors, or a Detectron2 pickle)."""
    from vito_train.checkpoint import CheckpointError
    from vito_train.export import FORMATS, export

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")

    def body() -> dict:
        check_output_file(out, "--out")
        return export(run_dir, out, fmt)

    meta = run_with_exit_codes(
        body,
        input_errors=(CheckpointError, OutputError),
        console=console,
        program="vito-train",
        verbose=verbose_requested(ctx),
    )
    console.print(f"wrote {out}: {meta['arch']} step {meta['step']} ({fmt})")


@app.command()
def presets() -> None:
    """List the bundled presets and which configuration (or ablation cell of the paper) each is."""
    from vito_train.config import preset_cell, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        typer.echo(f"{name:<{width}}  {preset_cell(name)}".rstrip())
