"""The three stages of a staged build as Ray actors, their declared resources, and a stage's actor set.

- fetch: download, normalise, validate (:func:`labeling.fetch_clip`); network bound, so each actor is
  threaded (``max_concurrency``) and runs many downloads at once under the run's shared rate limiter.
- decode: sample the clip's frames and resize them to the model's input size (:func:`decode_clip_frames`).
- model: one loaded scorer per actor, labelling batches assembled across clips (:class:`ClipModel`).

:func:`plan_stages` turns the knobs (``--fetch-workers`` ...) into actor counts and Ray resources;
:class:`ActorStage` owns one stage's actors, keeps at most ``depth`` calls queued on each, and replaces an
actor that died (killed, out of memory, a crashed decoder), sending its unfinished calls to the new one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from videonet_curate.labeling import DecodedClip, FetchedClip, LabelingConfig, decode_clip_frames, fetch_clip
from videonet_curate.uri import location

log = logging.getLogger(__name__)

FETCHES_PER_ACTOR = 8  # concurrent downloads (threads) in one fetch actor
FETCH_ACTOR_CPUS = 0.25  # downloads wait on the network; ffmpeg trims now and then
MAX_DEATHS_PER_CALL = 3  # a call whose actor died this often is given up (its clips are failed rows)
MAX_REPLACEMENTS = 20  # per actor slot: more deaths than this is a broken worker, not bad luck
_MIB = 2**20
DIED = object()  # what ActorStage.finish gives for a call whose actor died


@dataclass(frozen=True)
class StageOptions:
    """The stage knobs of `videonet-curate build` (``--fetch-workers`` ... ``--model-workers``)."""

    fetch_workers: int = 8  # downloads at once, all fetch actors together
    decode_workers: int | None = None  # None: the cores the model leaves free (at least 1)
    model_workers: int = 1  # model actors, each holding one scorer
    fused: bool = False  # the old one-actor-per-shard path (benchmark baseline)


@dataclass(frozen=True)
class StageSpec:
    """How one stage runs: ``actors`` Ray actors, each taking ``concurrency`` calls at once and holding
    the declared ``num_cpus`` / ``num_gpus`` / ``memory`` (bytes)."""

    name: str
    actors: int
    concurrency: int
    num_cpus: float
    num_gpus: float
    memory: int
    env: tuple[tuple[str, str], ...] = ()  # environment variables the actor's process starts with

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory": self.memory,
            "max_concurrency": self.concurrency,
        }
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        return options


# A CPU model actor runs its forwards in threads, and glibc gives each thread its own arena, whose heaps
# hold at most 64 MB: a bigger activation block is mapped afresh and unmapped on free whatever mallopt
# says (keep_freed_memory), so its pages fault in again on every forward (two forwards at once measured
# 6,000 faults and 15 ms of kernel time per frame). One arena, read by glibc when the process starts,
# keeps every block on the main heap, where it is reused: 33 faults and 0.1 ms per frame.
CPU_MODEL_ENV = (("MALLOC_ARENA_MAX", "1"),)


def default_decode_workers(cpus: float, model_cpus: float, on_gpu: bool = False) -> int:
    """Decoders, at least one. With GPU models: the cores the model actors leave free. On the CPU: half
    the cores, whatever the model asks for, because there the model's forwards and the decoders share
    all the cores through the OS (each stage can take them all while the other waits on a queue)."""
    if on_gpu:
        return max(1, int(cpus - model_cpus))
    return max(1, int(cpus) // 2)


def plan_stages(
    options: StageOptions,
    config: LabelingConfig,
    *,
    cpus: float,
    gpus_per_model: float,
    fetch: bool,
    gpus: float | None = None,
) -> dict[str, StageSpec]:
    """Actor counts and declared resources of each stage for a Ray cluster with ``cpus`` CPUs.

    A model actor asks for ``config.threads`` cores on the CPU, and runs that many forwards at once,
    one torch thread each (single-threaded forwards side by side keep their speed on shared cores, where
    intra-op threads stall at every barrier when a decoder takes their core); with a GPU it asks for one
    core and ``gpus_per_model`` GPUs and runs one call at a time (its CUDA streams overlap the work). A
    fetch actor asks for a quarter core; each decoder for one core. When that asks for more CPUs than the
    cluster has (a small machine), the decode and model requests are scaled down together so every actor
    can be placed: the stages then share the cores through the OS, as a busy stage leaves others idle.
    """
    on_gpu = gpus_per_model > 0
    model_cpus = 1.0 if on_gpu else float(max(1, config.threads))
    model_calls = 1 if on_gpu else max(1, config.threads)
    model_workers = options.model_workers
    if gpus_per_model > 0 and gpus is not None:  # an actor that can never get its GPU would stall the run
        model_workers = max(1, min(model_workers, int(gpus // gpus_per_model)))
    fetch_actors = math.ceil(options.fetch_workers / FETCHES_PER_ACTOR) if fetch else 0
    fetch_cpus = FETCH_ACTOR_CPUS * fetch_actors
    decoders = options.decode_workers or default_decode_workers(cpus, model_cpus * model_workers, on_gpu)
    wanted = model_cpus * model_workers + decoders * 1.0
    scale = min(1.0, max(cpus - fetch_cpus, 0.1) / wanted)
    specs = {
        "decode": StageSpec("decode", decoders, 2, round(scale, 3), 0.0, 512 * _MIB),
        "model": StageSpec(
            "model",
            model_workers,
            model_calls,
            round(model_cpus * scale, 3),
            gpus_per_model,
            1024 * _MIB,
            () if on_gpu else CPU_MODEL_ENV,
        ),
    }
    if fetch_actors:
        per_actor = math.ceil(options.fetch_workers / fetch_actors)
        specs["fetch"] = StageSpec("fetch", fetch_actors, per_actor, FETCH_ACTOR_CPUS, 0.0, 256 * _MIB)
    return specs


# -- the actors ----------------------------------------------------------------------------------------
class FetchWorker:
    """Fetches candidates, several at once (a threaded actor)."""

    def __init__(self, out_dir: str, materialize: Callable[..., Mapping[str, Any]] | None) -> None:
        self.out_dir = location(out_dir)  # a URI stays a string
        self.materialize = materialize

    def fetch(self, candidate: Mapping[str, Any]) -> FetchedClip:
        return fetch_clip(candidate, self.out_dir, self.materialize)


class DecodeWorker:
    """Decodes clips to frames at the model's input size."""

    def __init__(self, config: LabelingConfig, described: list[Any], spec: Any = None) -> None:
        """``spec``: the model's PreprocessSpec where the driver knows it without the model
        (:func:`preprocess.known_preprocess_spec`): decoding then runs ahead while the model loads.
        Otherwise ``described``, ``[ref]``: the object ref of a model actor's ``describe()`` (in a list,
        so Ray does not wait for it before starting this actor), read on the first call."""
        # import torch and PyAV now, while the model loads; not torchvision (nor the scorers): the resize
        # is torch's own (preprocess.py), which saves each decode actor ~3 CPU s of start-up
        import videonet_curate.preprocess  # noqa: F401
        import videonet_curate.video  # noqa: F401

        # one decoder thread per clip: the actor decodes ``concurrency`` clips at once on its core(s);
        # ``config.threads`` is the model's
        self.config = dataclasses.replace(config, threads=1)
        self._described = described
        self.spec: Any = spec

    def _spec(self) -> Any:
        """The model's preprocessing; unless given, the first call waits for the model actor (its frames
        already read)."""
        if self.spec is None:
            import ray

            self.spec = ray.get(self._described[0])["spec"]
        return self.spec

    def decode(self, fetched: FetchedClip) -> tuple[dict[str, Any], Any]:
        """(row and seconds, frames or None): two returns, so the driver reads the small one only and hands
        the frames' object ref straight to a model actor."""
        decoded: DecodedClip = decode_clip_frames(fetched, self.config, self._spec)
        meta = {
            "row": decoded.row,
            "seconds": decoded.seconds,
            "frames": 0 if decoded.frames is None else len(decoded.frames),
        }
        return meta, decoded.frames


class ModelWorker:
    """Holds one scorer; labels batches of decoded clips. On the CPU it takes ``config.threads`` calls at
    once (the actor's ``max_concurrency``), each forward on one torch thread (see :func:`plan_stages`)."""

    def __init__(self, config: LabelingConfig) -> None:
        from videonet_curate.model_stage import ClipModel

        on_gpu = config.device.startswith("cuda")
        self.model = ClipModel(config, intra_op_threads=None if on_gpu else 1)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.model.preprocess_spec, "info": self.model.info, "dim": self.model.embedding_dim}

    def score(self, rows: list[dict[str, Any]], *frames: Any) -> Any:
        return self.model.score(list(zip(rows, frames, strict=True)))


# -- one stage's actors ----------------------------------------------------------------------------------
@dataclass
class _Call:
    slot: int
    generation: int
    method: str
    args: tuple[Any, ...]
    tag: Any
    refs: tuple[Any, ...]
    deaths: int = 0


class ActorStage:
    """The actors of one stage; each takes at most ``depth`` calls at once (its concurrency plus one
    queued, so it never waits for the driver). A call whose actor died goes to a fresh actor in its slot."""

    def __init__(self, spec: StageSpec, make: Callable[[], Any], depth: int | None = None) -> None:
        self.spec = spec
        self._make = make
        self.actors = [make() for _ in range(spec.actors)]
        self.generation = [0] * spec.actors
        self.load = [0] * spec.actors
        self.depth = depth or spec.concurrency + 1
        self.calls: dict[Any, _Call] = {}  # by the ref the driver waits on
        self.replaced = 0

    @property
    def in_flight(self) -> int:
        return len(self.calls)

    @property
    def capacity(self) -> int:
        return self.depth * len(self.actors)

    def has_room(self) -> bool:
        return self.in_flight < self.capacity

    def submit(
        self, method: str, *args: Any, tag: Any = None, num_returns: int = 1, deaths: int = 0
    ) -> tuple[Any, ...]:
        """Call ``method(*args)`` on the least loaded actor; returns its refs (the first is waited on)."""
        slot = min(range(len(self.actors)), key=self.load.__getitem__)
        bound = getattr(self.actors[slot], method)
        refs = (
            bound.options(num_returns=num_returns).remote(*args) if num_returns != 1 else bound.remote(*args)
        )
        refs = tuple(refs) if isinstance(refs, list) else (refs,)
        self.load[slot] += 1
        self.calls[refs[0]] = _Call(slot, self.generation[slot], method, args, tag, refs, deaths)
        return refs

    def finish(self, ref: Any) -> tuple[_Call, Any]:
        """Take a ready call off the books: (the call, its value), or (the call, :data:`DIED`) when its
        actor died, after which the slot holds a fresh actor and the caller may :meth:`resubmit` the call.
        An exception the method raised propagates (a bug, not a bad clip: the stage functions record
        those)."""
        import ray

        call = self.calls.pop(ref)
        self.load[call.slot] -= 1
        try:
            return call, ray.get(ref)
        except ray.exceptions.RayActorError:
            if self.generation[call.slot] == call.generation:  # the first of its calls to notice
                log.warning("a %s actor died; starting a new one in its place", self.spec.name)
                try:
                    ray.kill(self.actors[call.slot])
                except Exception:  # noqa: BLE001 - already gone
                    pass
                if self.replaced >= MAX_REPLACEMENTS * len(self.actors):
                    raise RuntimeError(
                        f"the {self.spec.name} actors died {self.replaced + 1} times (see the Ray worker "
                        "logs above for why); giving up"
                    ) from None
                self.actors[call.slot] = self._make()
                self.generation[call.slot] += 1
                self.replaced += 1
            return call, DIED

    def resubmit(self, call: _Call, num_returns: int = 1) -> tuple[Any, ...]:
        return self.submit(
            call.method, *call.args, tag=call.tag, num_returns=num_returns, deaths=call.deaths + 1
        )

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
