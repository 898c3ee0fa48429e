"""The ``report``, ``publish`` and ``verify`` commands (registered in cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from videonet_curate.exits import EXIT_BAD_INPUT, EXIT_FAILED_ROWS, console, error_line, guarded
from videonet_curate.manifest import ManifestError
from videonet_curate.publish import PublishedDatasetError, PublishError, publish, verify_published
from videonet_curate.report import write_report
from videonet_curate.targets import TargetError
from videonet_curate.uri import StorageError, StorageOptionError, StorageOptions, is_uri, local_path, location

STORAGE_OPTION_HELP = (
    "key=value for object storage, repeatable: endpoint_url=http://HOST:PORT, region=..., anon=true, "
    "profile=...; credentials come from the AWS_* environment or ~/.aws, never from here."
)

EXIT_VERIFY_FAILED = EXIT_FAILED_ROWS  # the dataset was checked completely; some file failed


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@guarded
def report_command(
    out: str = typer.Argument(
        ...,
        help="A build output directory (or file:///abs/dir) holding manifest.parquet (or the file itself).",
    ),
    target: str = typer.Option(
        None, "--target", help="Compare with imagenet, uniform or a FILE.csv (default: the build's target)."
    ),
    dup_threshold: float = typer.Option(
        None, "--dup-threshold", help="Draw this threshold on the similarity plot (default: the build's)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more."),
) -> None:
    """Write OUT/report/index.html with PNG plots and summary.json."""
    _logging(verbose)
    if is_uri(out):  # the report is written beside the manifest: a local directory only
        error_line(
            f"{out}: report reads and writes a local build directory (a path or file:///abs/dir); "
            "for a build on object storage, `publish --to` it (the card carries the plots) or copy it locally"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        with console.status("computing statistics and plots"):
            paths = write_report(location(out), target=target, dup_threshold=dup_threshold)
    except (ManifestError, TargetError) as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console.print(f"report: {paths.html}")
    for path in paths.plots.values():
        console.print(f"  plot: {path}")
    console.print(f"  summary: {paths.summary}")


@guarded
def publish_command(
    out: str = typer.Argument(
        ...,
        help="A build output directory (or URI: s3://bucket/run, file:///abs/run) holding manifest.parquet.",
    ),
    to: str = typer.Option(
        ...,
        "--to",
        help="The directory or URI (s3://bucket/dataset, file:///abs/dir) to publish into (new or empty).",
    ),
    with_embeddings: bool = typer.Option(False, "--with-embeddings", help="Also publish embeddings.parquet."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --to directory."),
    title: str = typer.Option("VideoNet clips", "--title", help="The dataset card's title."),
    storage_option: list[str] = typer.Option([], "--storage-option", help=STORAGE_OPTION_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more."),
) -> None:
    """Publish the manifest with a dataset card (README.md), plots and checksums.sha256."""
    _logging(verbose)
    try:
        options = StorageOptions.parse(storage_option)
        with console.status(f"publishing to {to}"):
            result = publish(
                out, to, with_embeddings=with_embeddings, overwrite=overwrite, title=title, options=options
            )
    except (ManifestError, PublishError, TargetError, StorageOptionError, StorageError) as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    table = Table(title=f"published {result.directory}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for name in result.files:
        table.add_row(name, f"{result.sizes[name]:,}")
    console.print(table)
    console.print(f"{result.kept} kept clips of {result.rows} rows; verified.")


@guarded
def verify_command(
    directory: str = typer.Argument(
        ...,
        help="A directory (or URI: s3://bucket/dataset, file:///abs/dir) written by `publish`.",
    ),
    storage_option: list[str] = typer.Option([], "--storage-option", help=STORAGE_OPTION_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more; print traces of internal errors."),
) -> None:
    """Check checksums and schema of a published dataset; exit 1 naming the file on any mismatch."""
    _logging(verbose)
    if not is_uri(directory) and not Path(local_path(directory)).is_dir():
        error_line(f"{directory} is not a directory; pass a directory written by `videonet-curate publish`")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        options = StorageOptions.parse(storage_option)
        verify_published(directory, options)
    except (StorageOptionError, StorageError) as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except PublishedDatasetError as exc:
        error_line(f"{exc.path}: {exc.problem}", prefix="verification failed")
        raise typer.Exit(EXIT_VERIFY_FAILED) from None
    console.print(f"[green]ok[/green]: {directory} verifies (checksums and schema)")
