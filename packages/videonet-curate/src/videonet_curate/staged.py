"""The staged build on Ray: candidates stream through fetch -> decode -> model actors with bounded queues.

The driver pulls candidates lazily, keeps every stage's actors busy up to a fixed depth (``ray.wait`` on
the calls in flight), and never lets more than a fixed number of clips wait between two stages, so memory
stays flat however long the candidate list is (backpressure: a full queue stops the stage before it).
Decoded frames travel as object refs from a decode actor straight to a model actor; the driver only reads
the small rows. A shard is written (rows, embeddings, then its done-marker, :func:`write_shard`) as soon
as its last row is in, so resume works exactly as with the fused path: finished shards are skipped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate.labeling import (
    FetchedClip,
    LabelingConfig,
    failed,
    fetch_clip,
    shard_summary,
    start_row,
    write_labelled_shard,
)
from videonet_curate.model_stage import BusySpans
from videonet_curate.shards import Shard
from videonet_curate.stages import (
    DIED,
    MAX_DEATHS_PER_CALL,
    ActorStage,
    DecodeWorker,
    FetchWorker,
    ModelWorker,
    StageOptions,
    StageSpec,
    plan_stages,
)

log = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "model")
_PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class QueueLimits:
    """The most clips waiting between stages: fetched for a decoder, decoded frames for a model actor."""

    fetched: int
    decoded_frames: int


def queue_limits(plan: Mapping[str, StageSpec], call_frames: int) -> QueueLimits:
    """Twice what the next stage can hold in flight: enough that it never starves, small enough to be
    memory-flat (decoded frames wait at the model's input size, ~150 KB each at 224 px)."""
    decode = plan["decode"]
    model = plan["model"]
    return QueueLimits(
        fetched=2 * decode.actors * (decode.concurrency + 1),
        decoded_frames=2 * call_frames * model.actors * model.concurrency,
    )


def frames_per_call(config: LabelingConfig, on_gpu: bool) -> int:
    """Frames in one model call: one ``--batch-frames`` forward on the CPU; four on a GPU, so the actor
    can overlap the next chunk's copy and normalisation with the current chunk's forward."""
    return config.batch_frames * (4 if on_gpu else 1)


def partial_batch_ok(upstream_idle: bool, drained: bool, model_in_flight: int) -> bool:
    """Whether the model may be handed fewer frames than a full call. Once nothing more can arrive
    (``drained``: candidates exhausted, nothing fetching, decoding or waiting to decode): at once, so the
    last, partial batch runs beside the last full ones on the CPU instead of alone after them. Before
    that, only while decoding has paused and the model would otherwise sit idle (a slow source)."""
    return drained or (upstream_idle and model_in_flight == 0)


@dataclass
class StagedStats:
    """What a staged run saw: per stage clips done and the peak of clips queued or in flight, the most
    clips anywhere between the source and a written shard, actors replaced, the plan."""

    done: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    peak_queued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    peak_in_system: int = 0
    replaced: dict[str, int] = field(default_factory=dict)
    model_busy: BusySpans = field(default_factory=BusySpans)  # wall seconds with a model call running
    model_window: tuple[float, float] | None = None  # wall clock of the first model call's start, last's end
    plan: dict[str, StageSpec] = field(default_factory=dict)
    stages: dict[str, ActorStage] = field(default_factory=dict)  # live during the run (tests kill actors)

    @property
    def model_busy_s(self) -> float:
        """Wall seconds during which at least one model call was running (all model actors)."""
        return self.model_busy.seconds


class ShardBook:
    """Rows, embeddings and stage seconds of the shards in progress; says when one is complete."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)
        self.missing = [len(s.candidates) for s in shards]
        self.rows: dict[int, list[dict[str, Any]]] = {}
        self.embeddings: dict[int, dict[str, np.ndarray]] = {}
        self.timings: dict[int, dict[str, float]] = {}
        self.open_clips = 0  # rows in, of shards not yet written

    def time(self, index: int, stage: str, seconds: float) -> None:
        timings = self.timings.setdefault(
            index, dict.fromkeys(("materialize", "sample", "embed", "score"), 0.0)
        )
        timings[stage] += seconds

    def add(self, index: int, row: dict[str, Any], embedding: np.ndarray | None = None) -> bool:
        """Record a clip's final row; True when it was its shard's last."""
        self.rows.setdefault(index, []).append(row)
        if embedding is not None:
            self.embeddings.setdefault(index, {})[row["clip_id"]] = embedding
        self.missing[index] -= 1
        self.open_clips += 1
        if self.missing[index] < 0:
            raise RuntimeError(f"shard {self.shards[index].name} got more rows than it has candidates")
        return self.missing[index] == 0

    def pop(self, index: int) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, float]]:
        rows = self.rows.pop(index, [])
        self.open_clips -= len(rows)
        self.time(index, "sample", 0.0)
        return rows, self.embeddings.pop(index, {}), self.timings.pop(index)


def check_known_spec(known: Any, loaded: Any, model: str) -> None:
    """The decoders resized to ``known`` before the model loaded: it must be the loaded model's own."""
    if known is not None and known != loaded:
        raise RuntimeError(
            f"the decoders resized to {known} but the loaded {model!r} expects {loaded}: "
            "preprocess.known_preprocess_spec is out of date with the model"
        )


@dataclass(frozen=True)
class StageWorkers:
    """The actor classes of the stages (tests swap in fakes)."""

    fetch: type = FetchWorker
    decode: type = DecodeWorker
    model: type = ModelWorker


def run_staged(
    shards: Sequence[Shard],
    config: LabelingConfig,
    out_dir: Path,
    options: StageOptions,
    *,
    materialize: Callable[..., Mapping[str, Any]] | None = None,
    on_progress: Callable[..., None] | None = None,
    gpus_per_model: float = 0.0,
    workers: StageWorkers = StageWorkers(),
    stats: StagedStats | None = None,
) -> list[dict[str, Any]]:
    """Label every candidate of ``shards`` through the three stages; returns one summary per shard."""
    import ray

    from videonet_curate.preprocess import known_preprocess_spec  # imports torch: here, not at import

    stats = stats if stats is not None else StagedStats()
    needs_fetch = materialize is not None and any(
        c.get("locator") is None for s in shards for c in s.candidates
    )
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    plan = plan_stages(
        options, config, cpus=cpus, gpus_per_model=gpus_per_model, fetch=needs_fetch, gpus=gpus
    )
    stats.plan = plan
    log.info("stages: %s", plan)

    def actor_of(cls: type, spec: StageSpec, *args: Any) -> Callable[[], Any]:
        remote = ray.remote(cls).options(**spec.ray_options())
        return lambda: remote.remote(*args)

    stages: dict[str, ActorStage] = {}
    try:
        # every stage's actors start at once (each imports torch and friends: seconds of CPU), and the
        # loop starts at once: decoding begins while the model loads. The decoders resize to the
        # model's preprocessing: the default model's is known here, so they decode ahead, filling the
        # model's queue, while it loads (~6 CPU s); any other model's comes as the object ref of its
        # describe(), resolved once a decoder's first clip is read
        known_spec = known_preprocess_spec(config.model)
        stages["model"] = ActorStage(plan["model"], actor_of(workers.model, plan["model"], config))
        described_ref = stages["model"].actors[0].describe.remote()
        stages["decode"] = ActorStage(
            plan["decode"], actor_of(workers.decode, plan["decode"], config, [described_ref], known_spec)
        )
        if needs_fetch:
            stages["fetch"] = ActorStage(
                plan["fetch"], actor_of(workers.fetch, plan["fetch"], str(out_dir), materialize)
            )
        stats.stages = stages
        loop = _Loop(
            shards, config, out_dir, stages, described_ref, stats, on_progress, gpus_per_model > 0, known_spec
        )
        return loop.run()
    finally:
        for stage in stages.values():
            stats.replaced[stage.spec.name] = stage.replaced
            stage.shutdown()
        stats.stages = {}


class _Loop:
    """One run of the driver loop (state shared by its small steps)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        config: LabelingConfig,
        out_dir: Path,
        stages: dict[str, ActorStage],
        described: Any,
        stats: StagedStats,
        on_progress: Callable[..., None] | None,
        on_gpu: bool,
        known_spec: Any = None,
    ) -> None:
        self.shards, self.config, self.out_dir = shards, config, out_dir
        self.fetch, self.decode, self.model = stages.get("fetch"), stages["decode"], stages["model"]
        self.described = described  # the ref of the model's describe(): its info and dim, once loaded
        self.info: Mapping[str, Any] | None = None
        self.dim = 0
        self.stats, self.on_progress = stats, on_progress
        self.call_frames = frames_per_call(config, on_gpu)
        self.limits = queue_limits({**{s.spec.name: s.spec for s in stages.values()}}, self.call_frames)
        self.book = ShardBook(shards)
        self.candidates: Iterator[tuple[int, Mapping[str, Any]]] = (
            (i, c) for i, shard in enumerate(shards) for c in shard.candidates
        )
        self.total = sum(len(s.candidates) for s in shards)
        self.exhausted = False
        self.to_decode: deque[tuple[int, FetchedClip]] = deque()
        self.to_model: deque[tuple[int, dict[str, Any], Any, int]] = deque()  # shard, row, frames ref, n
        self.model_frames = 0
        self.summaries: list[dict[str, Any]] = []
        self._last_progress = 0.0
        self.known_spec = known_spec  # the preprocessing the decoders were given up front, if any

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        import ray

        while len(self.summaries) < len(self.shards):
            self._feed()
            waiting = [ref for stage in self._stages() for ref in stage.calls]
            if not waiting:
                raise RuntimeError("staged build stalled: nothing in flight but shards unfinished")
            if self.info is None:
                waiting.insert(0, self.described)
            ready, _ = ray.wait(waiting, num_returns=1)
            ready, _ = (
                ray.wait(waiting, num_returns=len(waiting), timeout=0) if len(waiting) > 1 else (ready, [])
            )
            if self.info is None and self.described in ready:  # first: a model that failed raises here
                self._describe()
            for ref in ready:
                if ref != self.described:
                    self._collect(ref)
            self._report()
        self._report(force=True)
        return self.summaries

    def _describe(self) -> None:
        """Read the model's info and dim (raises the model actor's error if it could not load)."""
        import ray

        described = ray.get(self.described)
        self.info, self.dim = described["info"], described["dim"]
        check_known_spec(self.known_spec, described["spec"], self.config.model)

    def _stages(self) -> list[ActorStage]:
        return [s for s in (self.fetch, self.decode, self.model) if s is not None]

    def _feed(self) -> None:
        while (
            not self.exhausted
            and len(self.to_decode) < self.limits.fetched
            and (self.fetch is None or self.fetch.has_room())
        ):
            try:
                index, candidate = next(self.candidates)
            except StopIteration:
                self.exhausted = True
                break
            if self.fetch is None or candidate.get("locator") is not None:
                self._fetched(index, fetch_clip(candidate, self.out_dir, None))  # a local file: nothing to do
            else:
                self.fetch.submit("fetch", candidate, tag=index)
        while self.to_decode and self.decode.has_room() and self.model_frames < self.limits.decoded_frames:
            index, fetched = self.to_decode.popleft()
            self.decode.submit("decode", fetched, tag=(index, fetched), num_returns=2)
        upstream_idle = self.decode.in_flight == 0 and not self.to_decode
        drained = self.exhausted and upstream_idle and (self.fetch is None or self.fetch.in_flight == 0)
        while (
            self.to_model
            and self.model.has_room()
            and (
                self.model_frames >= self.call_frames
                or partial_batch_ok(upstream_idle, drained, self.model.in_flight)
            )
        ):
            self._submit_batch()
        self._track()

    def _submit_batch(self) -> None:
        batch, frames = [], 0
        while self.to_model and frames < self.call_frames:
            item = self.to_model.popleft()
            batch.append(item)
            frames += item[3]
        self.model_frames -= frames
        rows = [row for _, row, _, _ in batch]
        self.model.submit("score", rows, *[ref for _, _, ref, _ in batch], tag=batch)

    # -- results --------------------------------------------------------------------------------------
    def _collect(self, ref: Any) -> None:
        for stage in self._stages():
            if ref in stage.calls:
                call, value = stage.finish(ref)
                getattr(self, f"_done_{stage.spec.name}")(stage, call, value)
                return

    def _gave_up(self, stage: ActorStage, call: Any) -> bool:
        if call.deaths + 1 < MAX_DEATHS_PER_CALL:
            return False
        log.error(
            "a %s actor died %d times on the same call; its clips are failed rows",
            stage.spec.name,
            call.deaths + 1,
        )
        return True

    def _done_fetch(self, stage: ActorStage, call: Any, value: Any) -> None:
        index = call.tag
        if value is DIED:
            if not self._gave_up(stage, call):
                stage.resubmit(call)
                return
            detail = f"the fetch worker died {MAX_DEATHS_PER_CALL} times on this clip"
            value = FetchedClip(failed(start_row(call.args[0]), "internal", detail), None)
        self.stats.done["fetch"] += 1
        self._fetched(index, value)

    def _fetched(self, index: int, fetched: FetchedClip) -> None:
        self.book.time(index, "materialize", fetched.seconds)
        if fetched.path is None:
            self._final(index, fetched.row)
        else:
            self.to_decode.append((index, fetched))

    def _done_decode(self, stage: ActorStage, call: Any, meta: Any) -> None:
        index, fetched = call.tag
        if meta is DIED:
            if not self._gave_up(stage, call):
                stage.resubmit(call, num_returns=2)
                return
            detail = f"the decode worker died {MAX_DEATHS_PER_CALL} times on this clip"
            meta = {"row": failed(fetched.row, "decode_error", detail), "seconds": 0.0, "frames": 0}
        self.stats.done["decode"] += 1
        self.book.time(index, "sample", meta["seconds"])
        if meta["frames"] == 0:
            self._final(index, meta["row"])
        else:
            self.to_model.append((index, meta["row"], call.refs[1], meta["frames"]))
            self.model_frames += meta["frames"]

    def _done_model(self, stage: ActorStage, call: Any, scored: Any) -> None:
        batch = call.tag
        if scored is DIED:
            if not self._gave_up(stage, call):
                stage.resubmit(call)
                return
            for index, row, _, _ in batch:
                self._final(
                    index,
                    failed(
                        row,
                        "decode_error",
                        f"the model worker died {MAX_DEATHS_PER_CALL} times on this batch",
                    ),
                )
            return
        total = sum(n for *_, n in batch) or 1
        self.stats.done["model"] += len(batch)
        self.stats.model_busy.add(scored.started_at, scored.ended_at)
        first, last = self.stats.model_window or (scored.started_at, scored.ended_at)
        self.stats.model_window = (min(first, scored.started_at), max(last, scored.ended_at))
        for (index, _, _, n), row, embedding in zip(batch, scored.rows, scored.embeddings, strict=True):
            for name in ("embed", "score"):
                self.book.time(index, name, scored.seconds[name] * n / total)
            self._final(index, row, embedding)

    def _final(self, index: int, row: dict[str, Any], embedding: np.ndarray | None = None) -> None:
        if not self.book.add(index, row, embedding):
            return
        shard = self.shards[index]
        rows, embeddings, timings = self.book.pop(index)
        if self.info is None:  # a shard of failed rows only, done before the model loaded
            self._describe()
        write_labelled_shard(self.out_dir, shard, rows, embeddings, self.info, self.dim)
        self.summaries.append(shard_summary(shard.name, rows, timings))
        self._report(force=True)

    # -- accounting -----------------------------------------------------------------------------------
    def _queued(self) -> dict[str, int]:
        fetch_in_flight = self.fetch.in_flight if self.fetch is not None else 0
        model_in_flight = sum(len(call.tag) for call in self.model.calls.values())
        return {
            "fetch": fetch_in_flight,
            "decode": len(self.to_decode) + self.decode.in_flight,
            "model": len(self.to_model) + model_in_flight,
        }

    def _track(self) -> None:
        queued = self._queued()
        for name, count in queued.items():
            self.stats.peak_queued[name] = max(self.stats.peak_queued[name], count)
        self.stats.peak_in_system = max(
            self.stats.peak_in_system, sum(queued.values()) + self.book.open_clips
        )

    def _report(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < _PROGRESS_EVERY_S:
            return
        self._last_progress = now
        queued = self._queued()
        for name in STAGES:
            if name == "fetch" and self.fetch is None:
                continue
            self.on_progress(name, self.stats.done[name], self.total, queued=queued[name])
        self.on_progress("label", len(self.summaries), len(self.shards))
