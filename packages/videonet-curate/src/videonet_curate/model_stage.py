"""The embed-and-score step: one loaded scorer turns a batch of decoded clips into labelled rows.

Frames arrive at the model's input size as uint8 ``(N, 3, S, S)`` (the decode step resized them), so
what is left here is normalising and the forward. On a GPU (``torch.cuda.is_available()`` and a cuda
device) the batch is cut into chunks of ``batch_frames``: each chunk is copied into a pinned host buffer,
sent to the GPU and normalised on a side CUDA stream while the previous chunk's forward runs on the main
stream (double buffering, the path benchmarks/gpu_embed.py measured at 95% of the bare forward on an
H100). The precision is the scorer's (bf16 weights on a GPU by default, see ``resolve_precision``).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videonet_curate import manifest as mf
from videonet_curate.dedup import clip_embedding
from videonet_curate.labeling import LabelingConfig, resolve_precision


@dataclass
class ScoredBatch:
    """Rows labelled (status kept, reason None) in input order, each clip's embedding, and the seconds
    the batch spent in the forward (``embed``) and in turning probabilities into labels (``score``)."""

    rows: list[dict[str, Any]]
    embeddings: list[np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0  # wall clock (time.time) of the batch's start and end: the model's busy spans
    ended_at: float = 0.0


class BusySpans:
    """Seconds covered by at least one of the intervals added (a model actor runs several calls at once on
    the CPU, so summing their lengths would count overlapping calls twice). Keeps the merged spans, the
    oldest folded into a total once there are more than ``keep``: memory stays flat on a long build (a
    call still running that started before the folded spans could be counted twice; ``keep`` spans back
    that does not happen in practice)."""

    def __init__(self, keep: int = 1024) -> None:
        self.keep = keep
        self.spans: list[list[float]] = []  # disjoint, sorted [start, end]
        self.folded_s = 0.0

    def add(self, start: float, end: float) -> None:
        at = bisect.bisect_left(self.spans, [start, end])
        self.spans.insert(at, [start, end])
        merged: list[list[float]] = []
        for span in self.spans[max(0, at - 1) :]:
            if merged and span[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], span[1])
            else:
                merged.append(span)
        self.spans[max(0, at - 1) :] = merged
        if len(self.spans) > self.keep:
            old, self.spans = self.spans[: self.keep // 2], self.spans[self.keep // 2 :]
            self.folded_s += sum(e - s for s, e in old)

    @property
    def seconds(self) -> float:
        return self.folded_s + sum(e - s for s, e in self.spans)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
KEEP_FREED_BYTES = 2**31 - 2**20  # mallopt takes a C int: just under 2 GiB


def keep_freed_memory(keep_bytes: int = KEEP_FREED_BYTES) -> bool:
    """Make glibc's malloc reuse freed memory instead of handing it back to the kernel: every block comes
    from the heap (``M_MMAP_MAX`` 0) and up to ``keep_bytes`` free at its top stay mapped
    (``M_TRIM_THRESHOLD``; two forwards at once free more than 1 GiB at a time). Process-wide; False
    where the C library is not glibc (nothing changed).

    Why: a CPU forward allocates activations of tens of MB per layer (a batch of 32 at 224 px: 51 MB after
    the stem). glibc maps every block above its mmap threshold (32 MB at most) afresh and unmaps it on
    free, so each forward page-faults all of its activations in again: efficientnet-lite0 measured 19,000
    minor faults and 54 ms of kernel time per frame beside 47 ms of user time; with this, 300-650 faults
    and 1-2 ms (the forward at half the CPU seconds), for a peak RSS 0.1-0.5 GB higher."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl, macOS: AttributeError)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, keep_bytes))


def chunk_bounds(total: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` cutting ``total`` frames into chunks of at most ``chunk``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(start, min(total, start + chunk)) for start in range(0, total, chunk)]


class ClipModel:
    """Holds one scorer (loaded once per actor) and labels batches of clips."""

    def __init__(self, config: LabelingConfig, intra_op_threads: int | None = None) -> None:
        """``intra_op_threads``: torch threads of one forward (default ``config.threads``); 1 where the
        caller runs several forwards at once (the staged model actor on the CPU)."""
        import torch

        from videonet_curate.models import load_scorer

        torch.set_num_threads(max(1, intra_op_threads or config.threads))
        self.config = config
        self.scorer = load_scorer(
            config.model,
            device=config.device,
            templates=config.templates,
            precision=resolve_precision(config.precision, config.device),
        )
        self.on_gpu = self.scorer.device.type == "cuda" and torch.cuda.is_available()
        if not self.on_gpu:
            keep_freed_memory()  # the forward's activations reuse the heap: half its CPU seconds
        self._side = torch.cuda.Stream(self.scorer.device) if self.on_gpu else None
        self._pinned: list[Any] = []  # two pinned host buffers, used in turn
        self._copied: list[Any] = []  # events: the last copy out of each buffer has finished

    @property
    def preprocess_spec(self) -> Any:
        return self.scorer.preprocess_spec

    @property
    def embedding_dim(self) -> int:
        return int(self.scorer.embedding_dim)

    @property
    def info(self) -> dict[str, str]:
        """What a shard's done-marker records about the model that labelled it."""
        return {"model_id": self.scorer.model_id, "prototype_set": self.scorer.prototype_set}

    def score(self, clips: Sequence[tuple[dict[str, Any], np.ndarray]]) -> ScoredBatch:
        """Label ``(row, frames)`` pairs: one embedding per frame, then each clip scored from its frames."""
        from videonet_curate.classify import score_clip

        if not clips:
            return ScoredBatch([], [], {"embed": 0.0, "score": 0.0})
        started_at = time.time()
        started = time.perf_counter()
        frames = np.concatenate([f for _, f in clips])  # a writable copy (Ray hands read-only views)
        emb, probs = self._embed_overlapped(frames) if self.on_gpu else self._embed_plain(frames)
        embed_s = time.perf_counter() - started

        started = time.perf_counter()
        rows, embeddings, offset = [], [], 0
        for row, clip_frames in clips:
            n = len(clip_frames)
            score = score_clip(probs[offset : offset + n])
            row = dict(row)
            row.update(
                label=int(score.label),
                label_name=score.label_name,
                score=float(score.score),
                margin=float(score.margin),
                top5_labels=[int(x) for x in score.top5_labels],
                top5_scores=[float(x) for x in score.top5_scores],
            )
            # labelled: the score cut, dedup and rebalancing are table steps on the driver (curation.py);
            # ``detail`` keeps any note, e.g. a clip kept although shorter than its segment
            row.update(status=mf.STATUS_KEPT, reason=None)
            rows.append(row)
            embeddings.append(clip_embedding(emb[offset : offset + n]))
            offset += n
        seconds = {"embed": embed_s, "score": time.perf_counter() - started}
        return ScoredBatch(rows, embeddings, seconds, started_at, time.time())

    # -- the forward ----------------------------------------------------------------------------------
    def _embed_plain(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from videonet_curate.models.base import normalize_frames

        scorer = self.scorer
        with torch.inference_mode():
            batch = normalize_frames(
                torch.from_numpy(frames).to(scorer.device), scorer.preprocess_spec, dtype=scorer.dtype
            )
            emb = scorer.embed(batch)
            probs = scorer.class_probabilities(emb)
            return emb.float().cpu().numpy(), probs.float().cpu().numpy()

    def _staging(self, slot: int, shape: tuple[int, ...]) -> Any:
        """Pinned host buffer ``slot`` (0 or 1), grown to hold ``shape`` uint8; waits until the previous
        copy out of it has finished before handing it back."""
        import torch

        while len(self._pinned) <= slot:
            self._pinned.append(torch.empty(0, dtype=torch.uint8).pin_memory())
            self._copied.append(torch.cuda.Event())
        self._copied[slot].synchronize()
        count = int(np.prod(shape))
        if self._pinned[slot].numel() < count:
            self._pinned[slot] = torch.empty(count, dtype=torch.uint8).pin_memory()
        return self._pinned[slot][:count].view(shape)

    def _upload(self, frames: np.ndarray, slot: int) -> Any:
        """Copy ``frames`` into a pinned buffer, then to the GPU and normalise them on the side stream."""
        import torch

        from videonet_curate.models.base import normalize_frames

        host = self._staging(slot, frames.shape)
        host.copy_(torch.from_numpy(np.ascontiguousarray(frames)))
        with torch.cuda.stream(self._side):
            on_gpu = host.to(self.scorer.device, non_blocking=True)
            self._copied[slot].record(self._side)
            return normalize_frames(on_gpu, self.scorer.preprocess_spec, dtype=self.scorer.dtype)

    def _embed_overlapped(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        scorer = self.scorer
        main = torch.cuda.current_stream(scorer.device)
        bounds = chunk_bounds(len(frames), self.config.batch_frames)
        embs, probs = [], []
        with torch.inference_mode():
            ready = self._upload(frames[bounds[0][0] : bounds[0][1]], 0)
            for index in range(len(bounds)):
                main.wait_stream(self._side)
                current = ready
                current.record_stream(main)  # made on the side stream, consumed on the main one
                emb = scorer.embed(current)  # queued on the main stream: the GPU runs it ...
                probs.append(scorer.class_probabilities(emb))
                embs.append(emb)
                if index + 1 < len(bounds):  # ... while the next chunk is copied and normalised
                    start, end = bounds[index + 1]
                    ready = self._upload(frames[start:end], (index + 1) % 2)
            emb_all = torch.cat(embs).float().cpu().numpy()  # waits for the main stream
            probs_all = torch.cat(probs).float().cpu().numpy()
        return emb_all, probs_all
