"""Clip-level ImageNet-1k assignment from per-frame class probabilities (pure numpy).

A clip's class distribution is the mean of its frames' distributions,
``p̄_c = (1/F) Σ_f p_{f,c}``; the clip is labelled ``argmax_c p̄_c`` with ``score = p̄_label`` and
``margin = p̄_(1) − p̄_(2)`` (top-1 minus top-2 of the mean). Before the argmax the duplicated
ImageNet names are folded (see :mod:`videonet_curate.imagenet`): ``p̄_657 += p̄_744``,
``p̄_837 += p̄_836`` and the twins are zeroed, so a pair whose prototypes are identical never
splits a clip's score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from videonet_curate.imagenet import DUPLICATE_NAME_TWINS, NUM_CLASSES, label_name

TOP_K = 5


class ScoringInputError(ValueError):
    """Per-frame probabilities that cannot be scored (wrong shape, empty, NaN or negative)."""


@dataclass(frozen=True)
class ClipScore:
    """A clip's ImageNet-1k assignment; field names match the manifest columns."""

    label: int
    label_name: str
    score: float
    margin: float
    top5_labels: list[int]
    top5_scores: list[float]

    def as_row(self) -> dict[str, Any]:
        """The manifest columns this score fills."""
        return asdict(self)


def fold_duplicate_names(probs: np.ndarray) -> np.ndarray:
    """Move each twin's probability onto its canonical class (last axis = 1000 classes); returns a copy."""
    folded = np.array(probs, dtype=np.float64, copy=True)
    for twin, canonical in DUPLICATE_NAME_TWINS.items():
        folded[..., canonical] += folded[..., twin]
        folded[..., twin] = 0.0
    return folded


def _check_frame_probs(frame_probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(frame_probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None, :]
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ScoringInputError(
            f"frame probabilities must have shape (frames, {NUM_CLASSES}), "
            f"got {tuple(np.shape(frame_probs))}: "
            "pass ImageNetScorer.class_probabilities(...) of the clip's sampled frames"
        )
    if probs.shape[0] == 0:
        raise ScoringInputError("no frames to score: sample at least one frame of the clip")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ScoringInputError("frame probabilities contain NaN, inf or negative values")
    return probs


def score_clip(frame_probs: np.ndarray, *, fold_duplicates: bool = True) -> ClipScore:
    """Label a clip from its frames' ImageNet-1k probabilities ``(F, 1000)`` (see the module docstring).

    Classes with zero mean probability (outside a scorer's class subset, or folded twins) never
    appear in the top-5, which is then shorter than 5.
    """
    mean = _check_frame_probs(frame_probs).mean(axis=0)
    if fold_duplicates:
        mean = fold_duplicate_names(mean)
    order = np.argsort(-mean, kind="stable")  # ties go to the lower index
    label = int(order[0])
    runner_up = float(mean[order[1]])
    top = [int(i) for i in order[:TOP_K] if mean[i] > 0.0] or [label]
    return ClipScore(
        label=label,
        label_name=label_name(label),
        score=float(mean[label]),
        margin=float(mean[label] - runner_up),
        top5_labels=top,
        top5_scores=[float(mean[i]) for i in top],
    )
