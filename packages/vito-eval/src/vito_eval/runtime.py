"""How an evaluation runs on its device: the encoder's autocast precision, and the throughput and peak
memory that `davis`, `segment` and `probe` report in their JSON.

Precision: ``auto`` is bf16 autocast on CUDA and fp32 elsewhere; ``fp32`` and ``bf16`` force one (bf16
autocast also works on CPU, which is how the tests hold bf16 to fp32). Only the frozen encoder's forward
runs under autocast; its outputs are cast back to float32, and everything after it (affinities and label
propagation, probes, heads, metrics) stays in float32. `BF16_TOLERANCE` is what bf16 may change: the
tests measure it on the real-texture fixtures against fp32 (tests/eval/test_precision.py).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` since the measurement began (the counter is
reset at its start); on CPU the process's peak resident set size (``ru_maxrss``), which covers the
whole process life, not only the measured span.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

# What bf16 autocast of the encoder may change against fp32. tests/eval/test_precision.py holds every
# command to these on CPU with efficientnet-lite0 (trained); measured there (2 cores, AMX bf16, 2026-12-01):
# feature cosine min 0.997 pooled (MNIST at 48 px) and 0.999 dense (stage 3, video frames); probe top-1
# +0.007 linear and -0.007 kNN on 300 test images (on 500 at 32 / 64 px: -0.002 / +0.014 linear, 0.000 /
# +0.002 kNN: a few near-tie predictions flip either way); DAVIS J&F (CRW) 0.8658 in both; VOC mIoU
# 0.6502 -> 0.6512.
BF16_TOLERANCE: dict[str, float] = {
    "feature_cosine_min": 0.99,  # per-sample cosine similarity of pooled / dense features
    "probe_top1_abs": 0.03,  # linear-probe and kNN top-1 accuracy (fraction; 300 test images)
    "davis_jf_abs": 0.02,  # DAVIS J&F mean
    "segment_miou_abs": 0.02,  # segmentation mIoU
}


def resolve_precision(precision: str, device: str | torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; ValueError for an unknown name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``precision`` is bf16, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA's max allocated since the last reset, else the process peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process peak RSS (ru_maxrss)"


@dataclass
class Throughput:
    """Items (frames, images) processed and the seconds spent on them; `report` is the JSON block."""

    device: torch.device
    unit: str
    items: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def timed(self, items: int) -> Iterator[None]:
        """Time one span of work on ``items`` items (CUDA is synchronised so that the time is the GPU's)."""
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        _synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.items += items

    def report(self) -> dict[str, Any]:
        memory, kind = peak_memory(self.device)
        rate = self.items / self.seconds if self.seconds > 0 else None
        return {
            self.unit: self.items,
            "seconds": round(self.seconds, 4),
            f"{self.unit}_per_second": None if rate is None else round(rate, 2),
            "peak_memory_bytes": memory,
            "peak_memory": kind,
            "device": str(self.device),
            **self.extra,
        }


def start_throughput(device: str | torch.device, unit: str, **extra: Any) -> Throughput:
    """A `Throughput` whose peak-memory counter starts now (CUDA's is reset)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return Throughput(device, unit, extra=extra)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
