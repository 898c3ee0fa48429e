"""Ray orchestration of `videonet-curate build`.

candidates (source) -> shards -> clips streamed through fetch, decode and model actors (staged.py) ->
shard Parquet + done-marker -> on the driver: merge -> dedup -> rebalance -> manifest + embeddings.
``StageOptions(fused=True)`` keeps the old path (one actor labels a whole shard in sequence) for comparison.

Ray runs locally by default (``ray.init()``), or joins a cluster with ``address``. Finished shards are
skipped on a re-run, so a crashed or interrupted build resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from videonet_curate import manifest as mf
from videonet_curate.embeddings import empty_embeddings
from videonet_curate.labeling import LabelingConfig, ShardLabeler
from videonet_curate.shards import (
    Shard,
    done_shards,
    fingerprint,
    plan_shards,
    read_done_info,
    read_shards,
    remove_stale,
)
from videonet_curate.stages import StageOptions

log = logging.getLogger(__name__)

# (stage, done, total) and, for the stages of a staged build, queued=clips waiting or in flight
ProgressCallback = Callable[..., None]


@dataclass
class LabellingResult:
    rows: pa.Table
    embeddings: pa.Table
    shards_total: int
    shards_skipped: int
    timings: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    prototype_set: str = ""


# -- Ray plumbing --------------------------------------------------------------------------------------
def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start Ray locally (default) or join the cluster at ``address``; idempotent."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    import signal

    from videonet_curate import exits
    from videonet_curate.uri import options_env

    if options_env():  # --storage-option (an S3 endpoint, say) for every worker, on every node
        kwargs["runtime_env"] = {"env_vars": options_env()}
    ours = signal.getsignal(signal.SIGTERM) is exits.on_signal
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    if ours:  # ray.init replaced our SIGTERM handler with one that exits with status 15
        exits.install_signal_handlers()


# -- labelling on Ray ----------------------------------------------------------------------------------
def _run_shards_on_ray(
    shards: Sequence[Shard],
    config: LabelingConfig,
    out_dir: Path,
    workers: int,
    materialize: Callable[..., Mapping[str, Any]] | None,
    on_progress: ProgressCallback | None,
    gpus_per_worker: float,
) -> list[dict[str, Any]]:
    import ray
    from ray.util import ActorPool

    actor_cls = ray.remote(num_cpus=config.threads, num_gpus=gpus_per_worker)(ShardLabeler)
    actors = [
        actor_cls.remote(config, str(out_dir), materialize) for _ in range(max(1, min(workers, len(shards))))
    ]
    pool = ActorPool(actors)
    summaries = []
    for summary in pool.map_unordered(lambda actor, shard: actor.run_shard.remote(shard), list(shards)):
        summaries.append(summary)
        if on_progress:
            on_progress("label", len(summaries), len(shards))
    for actor in actors:
        ray.kill(actor)
    return summaries


def label_shards(
    shards: Sequence[Shard],
    config: LabelingConfig,
    out_dir: Path,
    *,
    workers: int = 1,
    use_ray: bool = True,
    materialize: Callable[..., Mapping[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    gpus_per_worker: float = 0.0,
    stages: StageOptions | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished shard; finished ones (done-marker present) are skipped."""
    done = done_shards(out_dir, shards)  # one listing on object storage
    todo = [s for s in shards if s.name not in done]
    if not todo:
        return []
    stages = stages or StageOptions(model_workers=workers)
    if use_ray and not stages.fused:
        from videonet_curate.staged import run_staged

        return run_staged(
            todo,
            config,
            out_dir,
            stages,
            materialize=materialize,
            on_progress=on_progress,
            gpus_per_model=gpus_per_worker,
        )
    if use_ray:
        return _run_shards_on_ray(todo, config, out_dir, workers, materialize, on_progress, gpus_per_worker)
    labeler = ShardLabeler(config, out_dir, materialize)
    summaries = []
    for shard in todo:
        summaries.append(labeler.run_shard(shard))
        if on_progress:
            on_progress("label", len(summaries), len(todo))
    return summaries


# -- merge and finish ----------------------------------------------------------------------------------
def merge_outputs(
    out_dir: Path, shards: Sequence[Shard], extra_rows: Iterable[Mapping[str, Any]]
) -> tuple[pa.Table, pa.Table]:
    """Concatenate shard outputs and rows that never reached a shard, sorted by clip_id."""
    row_tables = [mf.rows_to_table(list(extra_rows))]
    emb_tables = []
    for rows, emb in read_shards(out_dir, shards):
        row_tables.append(mf.conform(rows))
        emb_tables.append(emb)
    rows = pa.concat_tables(row_tables).sort_by("clip_id")
    embeddings = pa.concat_tables(emb_tables).sort_by("clip_id") if emb_tables else empty_embeddings()
    return rows, embeddings


def summarize_timings(summaries: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per stage summed over shards (each shard summary holds its own), so over every worker."""
    totals: dict[str, float] = {}
    for summary in summaries:
        for stage, seconds in summary.get("timings", {}).items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
    return totals


# LabelingConfig fields that do not change a shard's rows: where and how fast it runs, how frames are batched
_RUNTIME_FIELDS = ("device", "threads", "batch_frames")


def fingerprint_settings(config: LabelingConfig, **extra: Any) -> dict[str, Any]:
    """What decides a shard's output: the labelling settings (not the runtime ones) and ``extra``."""
    data = asdict(config)
    for name in _RUNTIME_FIELDS:
        data.pop(name, None)
    # an always-empty field once (the fetch options are the source's, in ``extra``): kept in the hash so
    # that builds made before it went keep their fingerprints and are not labelled again
    data["fetch_options"] = {}
    data.update(extra)
    return data


def run_labelling(
    *,
    candidates: Sequence[Mapping[str, Any]],
    final_rows: Sequence[Mapping[str, Any]],
    config: LabelingConfig,
    out_dir: Path,
    shard_size: int,
    workers: int,
    use_ray: bool,
    run_settings: Mapping[str, Any],
    materialize: Callable[..., Mapping[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    gpus_per_worker: float = 0.0,
    stages: StageOptions | None = None,
) -> LabellingResult:
    """Plan, label (skipping finished shards) and merge."""
    run_fp = fingerprint(fingerprint_settings(config, **run_settings))
    shards = plan_shards(candidates, shard_size, run_fp)
    skipped = len(done_shards(out_dir, shards))
    summaries = label_shards(
        shards,
        config,
        out_dir,
        workers=workers,
        use_ray=use_ray,
        materialize=materialize,
        on_progress=on_progress,
        gpus_per_worker=gpus_per_worker,
        stages=stages,
    )
    remove_stale(out_dir, shards)
    rows, embeddings = merge_outputs(out_dir, shards, final_rows)
    info = read_done_info(out_dir, shards)
    return LabellingResult(
        rows=rows,
        embeddings=embeddings,
        shards_total=len(shards),
        shards_skipped=skipped,
        timings=summarize_timings(summaries),
        model_id=info.get("model_id", config.model),
        prototype_set=info.get("prototype_set", ""),
    )
