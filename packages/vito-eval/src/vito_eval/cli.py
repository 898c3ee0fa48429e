"""The ``vito-eval`` command line.

Each command is a thin typer wrapper: it builds its module's config dataclass and calls the module's
``run_*`` function through `run_command`, which applies the exit-code contract (README, "Exit
codes"): input errors (`EvalInputError`, an unwritable ``--out``) are one line and exit 2, anything
else is one line and exit 3 (the trace with ``--verbose``). Adding a command is a function here that
does the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from vito_eval import __version__
from vito_eval.errors import EvalInputError
from vito_train.exits import EXIT_PARTIAL, run_with_exit_codes, verbose_requested
from vito_train.outputs import OutputError, check_output_dir, check_output_file

app = typer.Typer(
    help="Evaluate frozen image encoders (linear probe, kNN, transfer tasks).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
T = TypeVar("T")


def run_command(
    ctx: typer.Context, body: Callable[[], T], out: Path | None = None, out_is_dir: bool = True
) -> T:
    """Run a command body under the exit-code contract, after checking that ``out`` is writable."""

    def checked() -> T:
        if out is not None:
            (check_output_dir if out_is_dir else check_output_file)(out, "--out")
        return body()

    return run_with_exit_codes(
        checked,
        input_errors=(EvalInputError, OutputError),
        console=console,
        program="vito-eval",
        verbose=verbose_requested(ctx),
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vito-eval {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Evaluate frozen image encoders (linear probe, kNN, transfer tasks)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def probe(
    ctx: typer.Context,
    encoder: list[str] = typer.Option(
        ...,
        "--encoder",
        "-e",
        help="Repeatable. RUN_DIR | FILE.safetensors | "
        "random:ARCH[:SEED] | efficientnet-lite0 | torchvision:ARCH:WEIGHTS | timm:NAME:WEIGHTS",
    ),
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="imagefolder:DIR | csv:FILE | mnist:DIR | fashion-mnist:DIR | mnist-csv:FILE",
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Results JSON; confusion PNGs are written beside it."),
    features: str = typer.Option(
        "gap",
        help="gap: global average pooling of the last stage; attn: the trained "
        "attention pooling (VITO runs only).",
    ),
    image_size: int = typer.Option(
        None, help="Side of the square model input (default: 96 for 28x28 datasets, else 224)."
    ),
    train_limit: int = typer.Option(None, help="Stratified, seeded subsample of the training split."),
    test_limit: int = typer.Option(None, help="Stratified, seeded subsample of the test split."),
    seed: int = typer.Option(0, help="Seed of the subsamples and the validation split."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    workers: int = typer.Option(0, help="DataLoader worker processes for decoding (0: in the main process)."),
    cache_dir: Path = typer.Option(
        None, help="Feature cache (default ~/.cache/vito-eval/features or $VITO_EVAL_CACHE)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached features."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    precision: str = typer.Option(
        "auto", help="Encoder forward: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16."
    ),
    knn_k: int = typer.Option(20, help="Neighbours of the weighted kNN (a 1-NN is always reported too)."),
    knn_temperature: float = typer.Option(0.07, help="Temperature T of the kNN vote weights exp(sim/T)."),
) -> None:
    """Linear probe and kNN of frozen encoders on one dataset, side by side."""
    from vito_eval.feature_cache import DEFAULT_CACHE_DIR
    from vito_eval.probe import ProbeEvalConfig, run_probe_eval
    from vito_eval.report import results_table

    config = ProbeEvalConfig(
        encoders=list(encoder),
        dataset=dataset,
        out=out,
        features=features,
        image_size=image_size,
        batch_size=batch_size,
        train_limit=train_limit,
        test_limit=test_limit,
        seed=seed,
        cache_dir=None if no_cache else (cache_dir or DEFAULT_CACHE_DIR),
        device=device,
        knn_k=knn_k,
        knn_temperature=knn_temperature,
        num_workers=workers,
        progress=True,
        precision=precision,
    )
    start = time.perf_counter()
    payload: dict[str, Any] = run_command(ctx, lambda: run_probe_eval(config), out, out_is_dir=False)
    ds = payload["dataset"]
    title = f"{ds['spec']}: {ds['train_size']} train / {ds['test_size']} test, {ds['image_size']}px"
    table_console = Console()
    if not table_console.is_terminal:  # rich assumes 80 columns when piped; the table needs more
        table_console = Console(width=160)
    table_console.print(results_table(payload["results"], title))
    console.print(f"done in {time.perf_counter() - start:.1f} s" + (f"; wrote {out}" if out else ""))


def _track(iterable, description: str):
    """A rich progress bar on stderr for the transfer commands."""
    from rich.progress import track

    return track(iterable, description=description, console=console, transient=True)


@app.command()
def davis(
    ctx: typer.Context,
    encoder: str = typer.Option(
        ...,
        "--encoder",
        "-e",
        help="RUN_DIR | FILE.safetensors | random:ARCH[:SEED] | "
        "efficientnet-lite0 | torchvision:ARCH:WEIGHTS | timm:NAME:WEIGHTS",
    ),
    root: Path = typer.Option(
        ..., "--root", help="DAVIS-2017 folder holding JPEGImages/480p, Annotations/480p, ImageSets/2017."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: predictions/, overlays/, CSV, JSON, PNG."
    ),
    preset: str = typer.Option("crw", help="crw (T=0.05) | vfs (T=0.07) | dino (7 context, top-5, T=0.1)."),
    n_context: int = typer.Option(None, help="Preceding frames used as context (preset: 20)."),
    topk: int = typer.Option(None, help="Neighbours per query position (preset: 10)."),
    radius: float = typer.Option(
        None, help="Spatial radius in feature cells for the preceding frames (preset: 12)."
    ),
    temperature: float = typer.Option(None, help="Softmax temperature of the affinities (preset)."),
    stage: int = typer.Option(3, help="ResNet stage whose features propagate labels."),
    output_stride: int = typer.Option(
        8, help="Remove later strides to this output stride (8, 16, 32; ResNets)."
    ),
    split: str = typer.Option("val", help="ImageSets/2017/<split>.txt"),
    sequence: list[str] = typer.Option(None, "--sequence", help="Repeatable: only these sequences."),
    overlay_frames: int = typer.Option(3, help="Overlay PNGs per sequence."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    precision: str = typer.Option(
        "auto", help="Encoder forward: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16."
    ),
) -> None:
    """DAVIS-2017 semi-supervised label propagation (J, F, J&F as davis2017-evaluation)."""
    from vito_eval.davis import DavisEvalConfig, run_davis_eval

    config = DavisEvalConfig(
        encoder=encoder,
        root=root,
        out=out,
        preset=preset,
        n_context=n_context,
        topk=topk,
        radius=radius,
        temperature=temperature,
        stage=stage,
        output_stride=output_stride,
        split=split,
        sequences=list(sequence or []) or None,
        n_overlay_frames=overlay_frames,
        device=device,
        precision=precision,
    )
    result = run_command(ctx, lambda: run_davis_eval(config, track=_track), out)
    m = result["metrics"]
    console.print(
        f"J&F {m['jf_mean']:.4f}  J {m['j_mean']:.4f}  F {m['f_mean']:.4f}  ({m['n_objects']} objects, "
        f"{len(result['failed'])} failed sequences); wrote {out}/summary.json",
        highlight=False,
    )
    if result["failed"]:  # done, but not on every sequence: the contract's "skipped work"
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def ucf101(
    ctx: typer.Context,
    encoder: str = typer.Option(..., "--encoder", "-e", help="An encoder spec, as for `probe`."),
    root: Path = typer.Option(
        ..., "--root", help="The UCF-101 video folder (<Class>/v_<Class>_gXX_cYY.avi)."
    ),
    splits: Path = typer.Option(
        ..., "--splits", help="ucfTrainTestlist folder (classInd.txt, trainlist0N.txt, ...)."
    ),
    split: int = typer.Option(1, help="Official split 1, 2 or 3."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder (or .json file) for results and the confusion PNG."
    ),
    frames: str = typer.Option(
        "middle", help="middle: the middle frame; average: mean of --n-frames frames."
    ),
    n_frames: int = typer.Option(8, help="Frames averaged with --frames average."),
    image_size: int = typer.Option(224, help="Shorter side resize + centre crop."),
    limit_per_class: int = typer.Option(
        None, help="Only the first N listed clips of each class (quick looks)."
    ),
    cache_dir: Path = typer.Option(
        None, help="Feature cache (default ~/.cache/vito-eval/features or $VITO_EVAL_CACHE)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached clip features."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """UCF-101 action recognition: clip features of a frozen encoder + linear probe, top-1/top-5."""
    from vito_eval.action import Ucf101Config, run_ucf101
    from vito_eval.feature_cache import DEFAULT_CACHE_DIR

    config = Ucf101Config(
        encoder=encoder,
        root=root,
        splits=splits,
        split=split,
        out=out,
        frames=frames,  # type: ignore[arg-type]
        n_frames=n_frames,
        image_size=image_size,
        device=device,
        limit_per_class=limit_per_class,
        cache_dir=None if no_cache else (cache_dir or DEFAULT_CACHE_DIR),
    )
    result = run_command(
        ctx, lambda: run_ucf101(config, track=_track), out, out_is_dir=out is None or out.suffix != ".json"
    )
    top5 = "-" if result["top5"] is None else f"{result['top5']:.4f}"
    console.print(
        f"UCF-101 split {split}: top-1 {result['top1']:.4f}  top-5 {top5}  ({result['train_clips']} train / "
        f"{result['test_clips']} test clips, {len(result['failed'])} failed)",
        highlight=False,
    )
    if result["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def segment(
    ctx: typer.Context,
    encoder: str = typer.Option(..., "--encoder", "-e", help="An encoder spec, as for `probe`."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="voc:ROOT (VOC2012) | ade20k:ROOT (ADEChallengeData2016)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for the JSON, per-class IoU plot and examples."
    ),
    head: str = typer.Option(
        "linear", help="linear: L-BFGS probe on sampled pixels; conv: BN + 1x1 conv, Adam."
    ),
    stage: int = typer.Option(4, help="Stage of the frozen dense features."),
    output_stride: int = typer.Option(None, help="ResNets: remove later strides (8 or 16) for denser maps."),
    image_size: int = typer.Option(448, help="Images are resized to this square for the encoder."),
    pixels_per_image: int = typer.Option(
        500, help="Linear head: labelled pixels sampled per training image."
    ),
    epochs: int = typer.Option(20, help="Conv head: epochs of Adam."),
    lr: float = typer.Option(1e-3, help="Conv head: Adam learning rate."),
    train_limit: int = typer.Option(None, help="Only the first N training images."),
    val_limit: int = typer.Option(None, help="Only the first N validation images."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    precision: str = typer.Option(
        "auto", help="Encoder forward: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16."
    ),
) -> None:
    """Semantic segmentation on frozen dense features (PASCAL VOC 2012, ADE20K): mIoU, per-class IoU."""
    from vito_eval.segmentation import SegmentationConfig, run_segmentation

    config = SegmentationConfig(
        encoder=encoder,
        dataset=dataset,
        out=out,
        head=head,
        stage=stage,  # type: ignore[arg-type]
        output_stride=output_stride,
        image_size=image_size,
        pixels_per_image=pixels_per_image,
        epochs=epochs,
        lr=lr,
        train_limit=train_limit,
        val_limit=val_limit,
        device=device,
        precision=precision,
    )
    result = run_command(ctx, lambda: run_segmentation(config, track=_track), out)
    console.print(
        f"{result['task']}: mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f} "
        f"({result['train_images']} train / {result['val_images']} val images, {head} head)",
        highlight=False,
    )


@app.command()
def detect(
    ctx: typer.Context,
    encoder: str = typer.Option(
        ..., "--encoder", "-e", help="An encoder spec with a ResNet trunk, as for `probe`."
    ),
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="coco:ROOT (instances_{train,val}2017) | lvis:ROOT (lvis_v1_{train,val}).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: checkpoint, metrics.jsonl, tb/, detections, metrics.json/csv."
    ),
    schedule: str = typer.Option("1x", help="1x (12 epochs) | 2x (24 epochs) | smoke (CPU, shapes fixture)."),
    batch_size: int = typer.Option(
        None, help="Total images per step over all processes (LR scales linearly)."
    ),
    epochs: int = typer.Option(None, help="Override the schedule's epochs (LR steps keep their place)."),
    lr: float = typer.Option(
        None, help="Override the base LR (default: the schedule's, scaled to the batch)."
    ),
    workers: int = typer.Option(2, help="DataLoader worker processes per rank."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (torchrun sets the GPU per rank)."),
    checkpoint_every: int = typer.Option(500, help="Iterations between checkpoints."),
    max_iters: int = typer.Option(
        None, help="Stop after this many iterations (resume later with the same command)."
    ),
    eval_limit: int = typer.Option(None, help="Evaluate only the first N val images."),
    seed: int = typer.Option(0, help="Seed of initialisation and data order."),
) -> None:
    """Fine-tune Mask R-CNN R-FPN (torchvision) from an encoder on COCO or LVIS; box and mask AP."""
    from vito_eval.detect.config import DetectConfig
    from vito_eval.detect.train import run_detect

    config = DetectConfig(
        encoder=encoder,
        dataset=dataset,
        out=out,
        schedule=schedule,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        workers=workers,
        device=device,
        checkpoint_every=checkpoint_every,
        max_iters=max_iters,
        eval_limit=eval_limit,
        seed=seed,
    )
    start = time.perf_counter()
    result = run_command(ctx, lambda: run_detect(config, track=_track), out)
    if not result:
        return
    if "stopped_at" in result:
        console.print(
            f"stopped at iteration {result['stopped_at']} of {result['total_iters']}; rerun to resume"
        )
        return
    box, mask = result["bbox"]["summary"], result["segm"]["summary"]
    extra = ""
    if "APr" in box:
        extra = f"  box APr/APc/APf {_fmt(box['APr'])}/{_fmt(box['APc'])}/{_fmt(box['APf'])}"
    console.print(
        f"{result['meta']['dataset']}: box AP {_fmt(box['AP'])} (AP50 {_fmt(box['AP50'])})  "
        f"mask AP {_fmt(mask['AP'])}{extra}  in {time.perf_counter() - start:.0f} s; wrote {out}/metrics.json",
        highlight=False,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@app.command("make-shapes")
def make_shapes(
    out: Path = typer.Argument(..., help="Folder to write the dataset into."),
    layout: str = typer.Option("coco", help="coco | lvis | voc | ade20k"),
    train_images: int = typer.Option(64, help="Training images."),
    val_images: int = typer.Option(16, help="Validation images."),
    image_size: int = typer.Option(128, help="Side of the square images."),
    seed: int = typer.Option(0, help="Seed of the generator."),
) -> None:
    """Write a synthetic shapes dataset (rectangles, ellipses, triangles) in a real dataset's layout."""
    from vito_eval.shapes import LAYOUTS, ShapesConfig, write_shapes_dataset

    if layout not in LAYOUTS:
        console.print(f"[bold red]error:[/] --layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
        raise typer.Exit(2)
    config = ShapesConfig(
        layout=layout,
        train_images=train_images,
        val_images=val_images,  # type: ignore[arg-type]
        image_size=image_size,
        seed=seed,
    )
    root = write_shapes_dataset(out, config)
    console.print(f"wrote {layout} shapes dataset ({train_images} train / {val_images} val) to {root}")


@app.command("finetune-seg")
def finetune_seg(
    ctx: typer.Context,
    encoder: str = typer.Option(
        ..., "--encoder", "-e", help="An encoder spec with a ResNet trunk, as for `probe`."
    ),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="voc:ROOT (VOC2012, SegmentationClassAug if present) | ade20k:ROOT."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for metrics.json, per_class_iou.csv, metrics.jsonl."
    ),
    schedule: str = typer.Option(
        None,
        help="voc-20k | ade20k-80k (mmseg FCN R50-D8 512x512; default by dataset) | smoke (CPU fixture).",
    ),
    output_stride: int = typer.Option(8, help="Dilated ResNet output stride: 8 (mmseg D8) or 16."),
    iterations: int = typer.Option(None, help="Override the schedule's iterations (poly decay follows)."),
    flip_test: bool = typer.Option(
        False, "--flip-test", help="Average the prediction with its mirror image."
    ),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, help="Seed of initialisation and data order."),
) -> None:
    """Fine-tune an encoder end to end with an FCN head (dilated ResNet); mIoU and per-class IoU."""
    from vito_eval.finetune_seg import FinetuneSegConfig, run_finetune_seg

    config = FinetuneSegConfig(
        encoder=encoder,
        dataset=dataset,
        out=out,
        schedule=schedule,
        output_stride=output_stride,
        iterations=iterations,
        flip_test=flip_test,
        device=device,
        workers=workers,
        seed=seed,
    )
    result = run_command(ctx, lambda: run_finetune_seg(config, track=_track), out)
    console.print(
        f"{result['task']}: mIoU {result['miou']:.2f}  pixel accuracy {result['pixel_accuracy']:.2f} "
        f"({result['train_images']} train / {result['val_images']} val images, {result['schedule']['name']}, "
        f"{result['train_seconds']:.0f} s training); wrote {out}/metrics.json",
        highlight=False,
    )
