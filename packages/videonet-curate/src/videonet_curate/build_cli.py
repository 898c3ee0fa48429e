"""The `build` command: arguments, a progress bar, a summary table, documented exit codes."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from videonet_curate.build import BuildInputError, BuildOptions, BuildReport, build
from videonet_curate.curation import CurationOptions
from videonet_curate.exits import EXIT_BAD_INPUT, EXIT_FAILED_ROWS, EXIT_OK, console, error_line, guarded
from videonet_curate.fetch.options import FetchConfigError, FetchOptions, parse_ytdlp_options
from videonet_curate.labeling import LabelingConfig
from videonet_curate.sources.base import SourceOptions
from videonet_curate.stages import StageOptions
from videonet_curate.uri import StorageOptionError, StorageOptions, location


def _default_workers() -> int:
    # One model per worker; on small machines one worker using every core beats several fighting over them.
    return max(1, (os.cpu_count() or 2) // 4)


def _default_threads(model_workers: int) -> int:
    """CPU threads per model actor: every core, shared by the model actors (and, through the OS, with
    the decoders, which wait on a full queue while the model is behind)."""
    return max(1, (os.cpu_count() or 1) // model_workers)


@guarded
def build_command(
    source: str = typer.Option(
        "local", "--source", help="Where candidate clips come from: local, kinetics, urls."
    ),
    input_path: str = typer.Option(
        None,
        "--input",
        help="local: a directory of videos (searched recursively), or a URI prefix (s3://bucket/videos).",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        help="Output directory (or URI, s3://bucket/run): manifest.parquet, embeddings, plots, summary.",
    ),
    storage_option: list[str] = typer.Option(
        None,
        "--storage-option",
        help="KEY=VALUE for URIs, e.g. endpoint_url=http://127.0.0.1:9000 (credentials: AWS_* variables).",
    ),
    model: str = typer.Option(
        "efficientnet-lite0",
        "--model",
        help="efficientnet-lite0 (bundled, offline) or openclip:ARCH[:PRETRAINED_TAG_OR_CHECKPOINT].",
    ),
    templates: str = typer.Option(
        "openai", "--templates", help="open_clip prompt set: openai (80) or simple (7)."
    ),
    clip_seconds: float = typer.Option(
        10.0, "--clip-seconds", min=0.5, help="Split videos into clips this long."
    ),
    min_clip_seconds: float = typer.Option(
        1.0,
        "--min-clip-seconds",
        min=0.0,
        help="Clips with fewer seconds of video are failed/too_short. A clip shorter than its segment "
        "(the source video ended early) is kept with its true end_s and a note.",
    ),
    frames_per_clip: int = typer.Option(
        8, "--frames-per-clip", min=1, help="Evenly spaced frames sampled per clip."
    ),
    min_score: float = typer.Option(
        0.1, "--min-score", min=0.0, max=1.0, help="Clips whose best class scores lower are marked low_score."
    ),
    dup_threshold: float = typer.Option(
        0.95,
        "--dup-threshold",
        min=-1.0,
        max=1.0,
        help="Clips whose embeddings' cosine similarity reaches this are near-duplicates; the best-scoring stays.",
    ),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="Skip de-duplication."),
    target: str = typer.Option(
        "imagenet",
        "--target",
        help="Class histogram to rebalance toward and report against: imagenet, uniform or FILE.csv (label,count).",
    ),
    budget: int = typer.Option(None, "--budget", min=0, help="Rebalance: keep at most this many clips."),
    per_class_max: int = typer.Option(
        None, "--per-class-max", min=1, help="Rebalance: at most this many per class."
    ),
    batch_frames: int = typer.Option(64, "--batch-frames", min=1, help="Frames per model forward pass."),
    decode_max_side: int = typer.Option(
        456,
        "--decode-max-side",
        min=64,
        help="Frames are scaled on decode so their longer side is at most this.",
    ),
    shard_size: int = typer.Option(16, "--shard-size", min=1, help="Clips per shard (the unit of resume)."),
    workers: int = typer.Option(
        None, "--workers", min=1, help="Alias of --model-workers (the model actors)."
    ),
    model_workers: int = typer.Option(
        None, "--model-workers", min=1, help="Model actors, each holding one model (default: cores/4, >= 1)."
    ),
    decode_workers: int = typer.Option(
        None,
        "--decode-workers",
        min=1,
        help="Decode actors: sample frames at the model's input size (default: cores/2).",
    ),
    fetch_workers: int = typer.Option(
        8,
        "--fetch-workers",
        min=1,
        help="Downloads at once (kinetics/urls), all fetch actors together; --max-rps and --max-concurrent "
        "still bound the requests.",
    ),
    fused: bool = typer.Option(
        False,
        "--fused",
        hidden=True,
        help="One actor per shard fetches, decodes and embeds in sequence (old path).",
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads per model actor: on the CPU it runs this many forwards at once, one torch "
        "thread each (--fused/--no-ray: one forward on this many threads). Default: every core, shared "
        "with the decoders.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Model precision: auto (bf16 on a GPU, fp32 on the CPU), fp32, fp16, bf16.",
    ),
    address: str = typer.Option(
        None, "--address", help="Join the Ray cluster at this address (default: local)."
    ),
    no_ray: bool = typer.Option(False, "--no-ray", help="Run in this process without Ray (debugging)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more."),
    # --source kinetics / urls (sources/kinetics.py, sources/urls.py, fetch/)
    annotations: Path = typer.Option(None, "--annotations", help="kinetics: an official Kinetics CSV."),
    split: str = typer.Option(None, "--split", help="kinetics: keep rows of this split (train, val, test)."),
    classes: str = typer.Option(None, "--classes", help="kinetics: keep these labels (comma-separated)."),
    limit: int = typer.Option(None, "--limit", min=1, help="kinetics/urls: only the first N selected rows."),
    mirror: str = typer.Option(
        None,
        "--mirror",
        help="kinetics: a copy {youtube_id}_{start:06d}_{end:06d}.mp4, a directory or a URI prefix "
        "(s3://bucket/kinetics); no downloads.",
    ),
    url_template: str = typer.Option(
        None, "--url-template", help="kinetics: HTTP mirror, e.g. http://host/{youtube_id}.mp4."
    ),
    min_height: int = typer.Option(
        360, "--min-height", min=0, help="Smallest format at or above this height."
    ),
    max_retries: int = typer.Option(
        3, "--max-retries", min=0, help="Retries of transient failures (backoff, jitter)."
    ),
    timeout: float = typer.Option(
        10.0, "--timeout", min=0.5, help="Socket timeout of every request, seconds."
    ),
    max_rps: float = typer.Option(
        2.0, "--max-rps", min=0.01, help="Requests per second, all workers together."
    ),
    max_concurrent: int = typer.Option(
        4, "--max-concurrent", min=1, help="Downloads at once per host, all workers."
    ),
    cookies: Path = typer.Option(None, "--cookies", help="Netscape cookies.txt for yt-dlp."),
    proxy: str = typer.Option(None, "--proxy", help="Proxy URL for yt-dlp and ffmpeg."),
    ytdlp_opt: list[str] = typer.Option(
        None, "--ytdlp-opt", help="Extra yt-dlp option KEY=VALUE (allow-listed keys only)."
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Re-fetch only the rows of OUT's manifest that failed for --retry-reasons.",
    ),
    retry_reasons: str = typer.Option(
        "network,blocked",
        "--retry-reasons",
        help="With --retry-failed: the failure reasons to retry (comma-separated).",
    ),
) -> None:
    """Curate candidate clips into OUT/manifest.parquet.

    Exit codes: 0 every row accounted for and none failed; 1 finished, but some rows failed or were missing
    (see status/reason in the manifest); 2 bad arguments or input (nothing was written); 3 internal error
    (--verbose prints the trace); 130/143 interrupted by SIGINT/SIGTERM (finished shards kept: rerun).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    workers = model_workers or workers or _default_workers()
    threads = threads or _default_threads(workers)
    try:
        for name, value in [
            ("--clip-seconds", clip_seconds),
            ("--min-clip-seconds", min_clip_seconds),
            ("--timeout", timeout),
            ("--max-rps", max_rps),
        ]:
            if not math.isfinite(value):  # typer's ranges let inf through; a socket timeout of inf hangs
                raise BuildInputError(f"{name} {value}: expected a finite number")
        resolved_device = _resolve_device(device, address)
        try:  # the fetch options, typed once here and carried by the source options into the source
            fetch = FetchOptions(
                mirror_dir=location(mirror) if mirror is not None else None,
                url_template=url_template,
                min_height=min_height,
                max_retries=max_retries,
                socket_timeout_s=timeout,
                max_rps=max_rps,
                max_concurrent=max_concurrent,
                cookies=cookies,
                proxy=proxy,
                ytdlp_options=parse_ytdlp_options(ytdlp_opt or ()),
                min_clip_seconds=min_clip_seconds,
            )
        except FetchConfigError as exc:  # e.g. a --cookies file that is not there: bad input
            raise BuildInputError(str(exc)) from None
        try:
            storage = StorageOptions.parse(storage_option)
        except StorageOptionError as exc:
            raise BuildInputError(str(exc)) from None
        source_options = SourceOptions(
            annotations=annotations,
            split=split,
            classes=_comma_list(classes) if classes else None,
            limit=limit,
            retry_failed=_comma_list(retry_reasons) if retry_failed else None,
            ytdlp_opt=tuple(ytdlp_opt or ()),
            fetch=fetch,
        )
    except BuildInputError as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    options = BuildOptions(
        source=source,
        out_dir=location(out),
        input_path=location(input_path) if input_path is not None else None,
        clip_seconds=clip_seconds,
        min_clip_seconds=min_clip_seconds,
        labeling=LabelingConfig(
            model=model,
            templates=templates,
            frames_per_clip=frames_per_clip,
            batch_frames=batch_frames,
            decode_max_side=decode_max_side,
            device=resolved_device,
            precision=precision,
            threads=threads,
        ),
        curation=CurationOptions(
            min_score=min_score,
            dup_threshold=None if no_dedup else dup_threshold,
            target=target,
            budget=budget,
            per_class_max=per_class_max,
        ),
        shard_size=shard_size,
        workers=workers,
        stages=StageOptions(
            fetch_workers=fetch_workers, decode_workers=decode_workers, model_workers=workers, fused=fused
        ),
        address=address,
        use_ray=not no_ray,
        gpus_per_worker=1.0 if resolved_device == "cuda" else 0.0,
        source_options=source_options,
        storage=storage,
    )
    try:
        _check_model(model, templates, precision)
        report = _run_with_progress(options)
    except BuildInputError as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _print_summary(report)
    raise typer.Exit(EXIT_FAILED_ROWS if report.has_failures else EXIT_OK)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _resolve_device(device: str, address: str | None = None) -> str:
    if device not in {"auto", "cpu", "cuda"}:
        raise BuildInputError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "cpu":
        return device
    import torch

    if device == "cuda" and not address and not torch.cuda.is_available():
        # fail now: Ray would otherwise wait forever for a GPU resource that no node has
        raise BuildInputError(
            "--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False); "
            "pass --device cpu, or auto to use a GPU only when there is one"
        )
    if device == "cuda":
        return device  # on a cluster (--address) the build checks that its nodes have GPUs
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_model(spec: str, templates: str, precision: str) -> None:
    """Reject an unknown --model, or pretrained weights that cannot be had offline, before any work starts."""
    # the spec names only: importing videonet_curate.models (torchvision, timm: ~3 CPU s) is the model
    # actors' work, not the driver's, for the default model
    from videonet_curate.model_specs import DEFAULT_MODEL, SPEC_HELP

    if precision not in {"auto", "fp32", "fp16", "bf16"}:
        raise BuildInputError(f"--precision {precision!r}: expected auto, fp32, fp16 or bf16")
    if templates not in {"openai", "simple"}:
        raise BuildInputError(f"--templates {templates!r}: expected openai (80 prompts) or simple (7)")
    spec = spec.strip()
    if spec == DEFAULT_MODEL:
        return
    if not spec.startswith("openclip:"):
        raise BuildInputError(f"unknown --model {spec!r}; valid specs: {SPEC_HELP}")
    from videonet_curate.models import ModelError
    from videonet_curate.models.openclip import cached_pretrained_file, hub_reachable, parse_openclip_spec

    try:
        parsed = parse_openclip_spec(spec)
    except ModelError as exc:
        raise BuildInputError(f"--model: {exc}") from exc
    if parsed.tag and cached_pretrained_file(parsed.arch, parsed.tag) is None and not hub_reachable():
        raise BuildInputError(
            f"--model {spec!r}: the weights for tag {parsed.tag!r} are not cached and the hub cannot be reached "
            f"(offline). Pass a local checkpoint instead (openclip:{parsed.arch}:/path/to/open_clip_model.safetensors), "
            "run once with network to cache the tag, or use the bundled offline model: --model efficientnet-lite0"
        )


class _RateColumn(ProgressColumn):
    """Clips (or shards) per second, and for a stage the clips waiting or in flight in it."""

    def render(self, task: Task) -> Text:
        rate = f"{task.speed:.1f}/s" if task.speed else "-"
        queued = task.fields.get("queued")
        return Text(rate if queued is None else f"{rate}  {queued} queued")


def _run_with_progress(options: BuildOptions) -> BuildReport:
    names = {"label": "shards", "fetch": "fetch", "decode": "decode", "model": "embed+score"}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, object] = {}

        def on_progress(stage: str, done: int, total: int, queued: int | None = None) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(names.get(stage, stage), total=None, queued=queued)
            progress.update(tasks[stage], completed=done, total=total, queued=queued)

        return build(options, on_progress=on_progress)


def _print_summary(report: BuildReport) -> None:
    summary = report.summary
    table = Table(title=f"videonet-curate build: {summary['rows']} clips in {summary['seconds']} s")
    table.add_column("status")
    table.add_column("clips", justify="right")
    for status, count in sorted(summary["status_counts"].items()):
        if count:
            table.add_row(status, str(count))
    console.print(table)
    if summary["reason_counts"]:
        reasons = Table(title="why clips were not kept")
        reasons.add_column("reason")
        reasons.add_column("clips", justify="right")
        for reason, count in sorted(summary["reason_counts"].items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, str(count))
        console.print(reasons)
    if summary["top_kept_classes"]:
        classes = Table(title="most frequent ImageNet classes among kept clips")
        classes.add_column("class")
        classes.add_column("clips", justify="right")
        for name, count in summary["top_kept_classes"].items():
            classes.add_row(name, str(count))
        console.print(classes)
    shards = summary["shards"]
    console.print(
        f"shards: {shards['total']} ({shards['skipped_as_done']} already done, skipped)  "
        f"model: {summary['model_id']}  prototypes: {summary['prototype_set']}"
    )
    console.print(f"manifest:   {report.manifest_path}")
    console.print(f"embeddings: {report.embeddings_path}")
    console.print(f"histogram:  {report.histogram_path}")
    console.print(f"summary:    {report.summary_path}")
