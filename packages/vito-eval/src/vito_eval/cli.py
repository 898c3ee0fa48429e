"""The ``vito-eval`` command line.

Each command is a thin typer wrapper: it builds its module's config dataclass and calls the module's
``run_*`` function through `run_command`, which prints input errors (`EvalInputError`) without a
traceback and exits with status 2. Adding a command is a function here that does the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vito_eval import __version__
from vito_eval.errors import EvalInputError

app = typer.Typer(help="Evaluate frozen image encoders (linear probe, kNN, transfer tasks).", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
T = TypeVar("T")


def run_command(body: Callable[[], T]) -> T:
    """Run a command body; a typed input error becomes a one-line message and exit status 2."""
    try:
        return body()
    except EvalInputError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-eval {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Evaluate frozen image encoders (linear probe, kNN, transfer tasks)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def probe(
    encoder: list[str] = typer.Option(..., "--encoder", "-e", help="Repeatable. RUN_DIR | FILE.safetensors | "
                                      "random:ARCH[:SEED] | efficientnet-lite0 | torchvision:ARCH:WEIGHTS | timm:NAME:WEIGHTS"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="imagefolder:DIR | csv:FILE | mnist:DIR | "
                                "fashion-mnist:DIR | mnist-csv:FILE"),
    out: Path = typer.Option(None, "--out", "-o", help="Results JSON; confusion PNGs are written beside it."),
    features: str = typer.Option("gap", help="gap: global average pooling of the last stage; attn: the trained "
                                 "attention pooling (VITO runs only)."),
    image_size: int = typer.Option(None, help="Side of the square model input (default: 96 for 28x28 datasets, else 224)."),
    train_limit: int = typer.Option(None, help="Stratified, seeded subsample of the training split."),
    test_limit: int = typer.Option(None, help="Stratified, seeded subsample of the test split."),
    seed: int = typer.Option(0, help="Seed of the subsamples and the validation split."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    workers: int = typer.Option(0, help="DataLoader worker processes for decoding (0: in the main process)."),
    cache_dir: Path = typer.Option(None, help="Feature cache (default ~/.cache/vito-eval/features or $VITO_EVAL_CACHE)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached features."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    knn_k: int = typer.Option(20, help="Neighbours of the weighted kNN (a 1-NN is always reported too)."),
    knn_temperature: float = typer.Option(0.07, help="Temperature T of the kNN vote weights exp(sim/T)."),
) -> None:
    """Linear probe and kNN of frozen encoders on one dataset, side by side."""
    from vito_eval.features import DEFAULT_CACHE_DIR
    from vito_eval.probe import ProbeEvalConfig, run_probe_eval
    from vito_eval.report import results_table

    config = ProbeEvalConfig(
        encoders=list(encoder), dataset=dataset, out=out, features=features, image_size=image_size,
        batch_size=batch_size, train_limit=train_limit, test_limit=test_limit, seed=seed,
        cache_dir=None if no_cache else (cache_dir or DEFAULT_CACHE_DIR), device=device, knn_k=knn_k,
        knn_temperature=knn_temperature, num_workers=workers, progress=True,
    )
    start = time.perf_counter()
    payload: dict[str, Any] = run_command(lambda: run_probe_eval(config))
    ds = payload["dataset"]
    title = f"{ds['spec']}: {ds['train_size']} train / {ds['test_size']} test, {ds['image_size']}px"
    table_console = Console()
    if not table_console.is_terminal:  # rich assumes 80 columns when piped; the table needs more
        table_console = Console(width=160)
    table_console.print(results_table(payload["results"], title))
    console.print(f"done in {time.perf_counter() - start:.1f} s" + (f"; wrote {out}" if out else ""))
