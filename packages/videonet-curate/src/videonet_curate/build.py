"""`videonet-curate build`: from a source of candidate clips to OUT/manifest.parquet.

The CLI parses arguments into :class:`BuildOptions` and calls :func:`build`; everything a user sees at
the end (manifest, embeddings, class histogram, summary) is written here, atomically.

OUT (and a local source's --input, a Kinetics --mirror) may be a URI (``s3://bucket/run``): every file
then goes through the storage layer (uri.py, storage.py) and the lock is an object (objlock.py). With
``--address`` a local OUT, --input or --mirror must be a mount that every node of the cluster sees at the
same path: checked here by a task on each node (cluster_paths.py).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from videonet_curate import manifest as mf
from videonet_curate.curation import CurationOptions, apply_curation
from videonet_curate.embeddings import EMBEDDINGS_FILENAME, write_embeddings
from videonet_curate.labeling import LabelingConfig
from videonet_curate.pipeline import ProgressCallback, init_ray, run_labelling
from videonet_curate.safepath import contained
from videonet_curate.sources.base import Gathered, Source, SourceArgs, SourceInputError, SourceOptions
from videonet_curate.sources.registry import make_source
from videonet_curate.stages import StageOptions
from videonet_curate.storage import atomic_write_json
from videonet_curate.summary import json_safe, kept_class_counts, summarize
from videonet_curate.uri import StorageError, StorageOptions, is_uri, join, location, storage_errors

log = logging.getLogger(__name__)

SUMMARY_FILENAME = "summary.json"
HISTOGRAM_FILENAME = "class_histogram.png"


class BuildInputError(ValueError):
    """Bad arguments detected before any work starts (exit code 2)."""


@dataclass
class BuildOptions:
    source: str
    out_dir: Path | str  # str: a URI (s3://bucket/run)
    input_path: Path | str | None = None
    clip_seconds: float = 10.0
    min_clip_seconds: float = (
        1.0  # shorter clips are failed/too_short; longer ones are kept, even short of a segment
    )
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    curation: CurationOptions = field(default_factory=CurationOptions)
    shard_size: int = 16
    workers: int = 1
    address: str | None = None
    use_ray: bool = True
    gpus_per_worker: float = 0.0
    source_options: SourceOptions = field(default_factory=SourceOptions)  # typed once by the CLI
    stages: StageOptions | None = None  # None: the staged defaults, with ``workers`` model actors
    storage: StorageOptions | None = None  # --storage-option: how to reach an s3:// (or other URI) OUT/input


@dataclass
class BuildReport:
    manifest_path: Path | str  # str: a URI
    embeddings_path: Path | str
    summary_path: Path | str
    histogram_path: Path | str
    table: pa.Table
    summary: dict[str, Any]

    @property
    def has_failures(self) -> bool:
        statuses = self.summary["status_counts"]
        return statuses.get(mf.STATUS_FAILED, 0) + statuses.get(mf.STATUS_MISSING, 0) > 0


# -- argument checks -----------------------------------------------------------------------------------
def check_output_dir(out_dir: Path | str) -> None:
    """Fail fast when OUT cannot be created or written; creates nothing (see :func:`build`)."""
    if is_uri(out_dir):
        check_output_uri(str(out_dir))
        return
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == out_dir and not out_dir.is_dir():
        raise BuildInputError(f"--out {out_dir} is a file; pass a directory (new or an earlier build's)")
    if not existing.is_dir():
        raise BuildInputError(f"--out {out_dir}: {existing} is a file, so the directory cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BuildInputError(f"--out {out_dir}: {existing} is not writable; pass a writable --out")


def check_output_uri(out: str) -> None:
    """An OUT in object storage: its bucket must be reachable, and OUT must not be an object itself."""
    from videonet_curate.uri import resolve

    try:
        fs, key = resolve(out)
        bucket = key.split("/", 1)[0]
        with storage_errors(out):
            fs.invalidate_cache(key)
            if not fs.exists(bucket):
                raise BuildInputError(
                    f"--out {out}: bucket {bucket} does not exist or cannot be reached; create it, or check "
                    "--storage-option endpoint_url=... and the AWS_* credentials"
                )
            if key != bucket and fs.isfile(key):
                raise BuildInputError(f"--out {out} is an object; pass a prefix (new or an earlier build's)")
    except StorageError as exc:
        raise BuildInputError(f"--out {exc}") from None


def check_paths(options: BuildOptions) -> None:
    """Which options take URIs: --out, --input of --source local and --mirror; the list files of the
    network sources (--annotations, a --source urls list) are local (on a cluster: a mount every node
    sees). A URI given to a local-only option is refused rather than becoming a local directory named
    ``s3:``."""
    from videonet_curate.uri import looks_like_uri

    value = options.input_path
    if options.source != "local" and value is not None and looks_like_uri(value):
        written = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)", r"\1://", os.fspath(value))
        raise BuildInputError(
            f"--input {written}: --input of --source {options.source} takes a local path (on a cluster: a "
            "mount every node sees at the same path); only --out, --mirror and --input of --source local "
            "take URIs"
        )


def check_ray_address(address: str | None, timeout_s: float = 3.0) -> None:
    """A --address that nothing answers at fails in seconds (``ray.init`` would wait for minutes)."""
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise BuildInputError(
            f"--address {address!r}: expected HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379) "
            "or ray://HOST:10001"
        )
    from videonet_curate.fetch.plan import check_host

    why = check_host(host.strip("[]"), int(port), timeout_s)
    if why:
        raise BuildInputError(
            f"--address {address}: {why} within {timeout_s:g} s; start the head (`ray start --head`) or fix "
            "the address, or leave --address out to run Ray locally"
        )


def check_source_arguments(options: BuildOptions) -> Source:
    """The source of the build, once everything about its input that can be checked before anything is
    written has been (a network source reads its whole list here, once)."""
    try:
        source = make_source(options.source, source_args(options))
        source.check()
    except SourceInputError as exc:
        raise BuildInputError(str(exc)) from exc
    return source


def source_args(options: BuildOptions) -> SourceArgs:
    return SourceArgs(
        out_dir=options.out_dir,
        input_path=options.input_path,
        clip_seconds=options.clip_seconds,
        min_clip_seconds=options.min_clip_seconds,
        options=options.source_options,
    )


def gather_candidates(source: Source, use_ray: bool) -> Gathered:
    """The source's candidates, settled rows, ``materialize`` and statistics (bad input: exit 2)."""
    try:
        return source.gather(use_ray=use_ray)
    except SourceInputError as exc:
        raise BuildInputError(str(exc)) from exc


# -- the job -------------------------------------------------------------------------------------------
def build(options: BuildOptions, on_progress: ProgressCallback | None = None) -> BuildReport:
    """Run the whole build and write OUT/manifest.parquet, embeddings, histogram and summary.

    Every check of the arguments and the input runs before Ray starts and before OUT is created, so a
    :class:`BuildInputError` leaves nothing behind. OUT/.lock keeps a second build out of the same OUT.
    """
    from videonet_curate.uri import using_options

    with using_options(options.storage):  # before any URI is touched: here, and in the Ray workers
        return _build(options, on_progress)


def _build(options: BuildOptions, on_progress: ProgressCallback | None) -> BuildReport:
    from videonet_curate.outlock import OutputLocked, build_lock

    out_dir = options.out_dir = location(options.out_dir)
    if options.input_path is not None:
        options.input_path = location(options.input_path)
    check_paths(options)
    check_output_dir(out_dir)
    source = check_source_arguments(options)
    load_target_or_fail(options.curation.target)
    if options.use_ray:
        check_ray_address(options.address)
    local_out = not is_uri(out_dir)
    created = local_out and not out_dir.exists()
    try:
        if options.use_ray:
            try:
                init_ray(options.address)
            except ConnectionError as exc:
                raise BuildInputError(f"--address {options.address}: {exc}") from None
            check_cluster_gpus(options.gpus_per_worker, options.address)
        if local_out:
            out_dir.mkdir(parents=True, exist_ok=True)
        if options.use_ray and options.address:
            check_cluster_paths(options)
        with build_lock(out_dir):
            return _build_locked(options, source, on_progress)
    except OutputLocked as exc:
        raise BuildInputError(str(exc)) from None
    except BuildInputError:
        if created:
            _remove_if_empty(out_dir)  # nothing written: not even the directory
        raise


def check_cluster_gpus(gpus_per_worker: float, address: str | None) -> None:
    """With --device cuda, a cluster without GPUs would leave every actor pending forever."""
    if gpus_per_worker <= 0:
        return
    import ray

    if ray.cluster_resources().get("GPU", 0) < gpus_per_worker:
        where = f"the cluster at --address {address}" if address else "this machine's Ray"
        raise BuildInputError(f"--device cuda: {where} has no GPU; pass --device cpu, or a cluster with GPUs")


def check_cluster_paths(options: BuildOptions) -> None:
    """On a cluster, every local path the workers read or write must be the same mount on every node."""
    from videonet_curate.cluster_paths import SharedPathError, check_nodes_see

    paths = {"--out": options.out_dir}
    if options.source == "local" and options.input_path is not None:
        paths["--input"] = options.input_path
    if options.source_options.fetch.mirror_dir is not None:
        paths["--mirror"] = options.source_options.fetch.mirror_dir
    try:
        check_nodes_see({flag: p for flag, p in paths.items() if not is_uri(p)})
    except SharedPathError as exc:
        raise BuildInputError(str(exc)) from None


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def _build_locked(options: BuildOptions, source: Source, on_progress: ProgressCallback | None) -> BuildReport:
    started = time.perf_counter()
    out_dir = options.out_dir
    gathered = gather_candidates(source, options.use_ray)
    labelled = run_labelling(
        candidates=gathered.candidates,
        final_rows=gathered.settled,
        config=options.labeling,
        out_dir=out_dir,
        shard_size=options.shard_size,
        workers=options.workers,
        use_ray=options.use_ray,
        run_settings=source.run_settings(),
        materialize=gathered.materialize,
        on_progress=on_progress,
        gpus_per_worker=options.gpus_per_worker,
        stages=options.stages,
    )
    embeddings = source.after_labelling(labelled.embeddings, labelled.rows)
    target = load_target_or_fail(options.curation.target)
    rows, curation_stats = apply_curation(labelled.rows, embeddings, options.curation, target)

    config = {
        "source": options.source,
        "input": str(options.input_path) if options.input_path else None,
        "clip_seconds": options.clip_seconds,
        "min_clip_seconds": options.min_clip_seconds,
        "labeling": vars(options.labeling),
        "curation": vars(options.curation),
        "source_options": options.source_options.as_config(),
    }
    model_id, prototype_set = labelled.model_id, labelled.prototype_set
    names = (mf.MANIFEST_FILENAME, EMBEDDINGS_FILENAME, HISTOGRAM_FILENAME, SUMMARY_FILENAME)
    if is_uri(out_dir):
        manifest_at, embeddings_at, histogram_at, summary_path = (join(out_dir, name) for name in names)
    else:
        for name in names:
            contained(out_dir, out_dir / name)  # a symlink planted in OUT must not redirect our writes
        manifest_at, embeddings_at, histogram_at, summary_path = (out_dir / name for name in names)
    manifest_path = mf.write_manifest(
        rows, manifest_at, model_id=model_id, prototype_set=prototype_set, config=config
    )
    embeddings_path = write_embeddings(embeddings, embeddings_at)
    histogram_path = write_class_histogram(rows, target, histogram_at)
    summary = summarize(rows, target, mf.read_metadata(manifest_path))
    summary.update(
        target=options.curation.target,
        dup_threshold=options.curation.dup_threshold,
        shards={"total": labelled.shards_total, "skipped_as_done": labelled.shards_skipped},
        stage_seconds={k: round(v, 3) for k, v in labelled.timings.items()},
        source=dict(gathered.stats),
        curation=curation_stats,
        seconds=round(time.perf_counter() - started, 2),
    )
    atomic_write_json(summary_path, json_safe(summary), sort_keys=True, allow_nan=False)
    return BuildReport(manifest_path, embeddings_path, summary_path, histogram_path, rows, summary)


def load_target_or_fail(target: str) -> Any:
    from videonet_curate.imagenet import unique_label_names
    from videonet_curate.targets import TargetError, load_target

    try:
        return load_target(target, label_names={name: i for i, name in enumerate(unique_label_names())})
    except TargetError as exc:
        raise BuildInputError(str(exc)) from exc


# -- outputs -------------------------------------------------------------------------------------------


def write_class_histogram(rows: pa.Table, target: Any, path: Path | str) -> Path | str:
    """The class histogram of the kept clips against the target (the report draws the same one)."""
    from videonet_curate.report import plot_class_histogram

    plot_class_histogram(kept_class_counts(rows, len(target)), target, path)
    return path
