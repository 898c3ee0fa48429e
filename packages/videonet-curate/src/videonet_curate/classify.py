"""Clip-level ImageNet-1k assignment from per-frame class probabilities (pure numpy).

A clip's class distribution is the mean of its frames' distributions,
``p̄_c = (1/F) Σ_f p_{f,c}``; the clip is labelled ``argmax_c p̄_c`` with ``score = p̄_label`` and
``margin = p̄_(1) − p̄_(2)`` (top-1 minus top-2 of the mean). Before averaging, each frame's duplicated
ImageNet names are merged (see :mod:`videonet_curate.imagenet`): the pair keeps the larger of its two
probabilities on the canonical class (657, 837), the twin is zeroed, and the frame is renormalised by
``1 − min(p_a, p_b)``. That is exactly a softmax with the pair's lower logit removed, so a pair whose
prototypes are identical counts once, like any other class. Summing the two instead would double a
CLIP scorer's probability for the pair (its two rows are identical) and bias labels toward it.
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
    """Merge each twin into its canonical class by the max, then renormalise (last axis = 1000 classes).

    Equal to a softmax over the logits with the lower logit of each pair dropped (see the module
    docstring); returns a copy whose rows keep their sum (one for distributions).
    """
    folded = np.array(probs, dtype=np.float64, copy=True)
    before = folded.sum(axis=-1, keepdims=True)
    for twin, canonical in DUPLICATE_NAME_TWINS.items():
        folded[..., canonical] = np.maximum(folded[..., canonical], folded[..., twin])
        folded[..., twin] = 0.0
    after = folded.sum(axis=-1, keepdims=True)
    # rescale so each row keeps its total (1 for a distribution); an all-zero row stays zero
    scale = np.divide(before, after, out=np.ones_like(after), where=after > 0)
    return folded * scale


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
    probs = _check_frame_probs(frame_probs)
    if fold_duplicates:
        probs = fold_duplicate_names(probs)  # per frame: the renormalisation is per distribution
    mean = probs.mean(axis=0)
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
