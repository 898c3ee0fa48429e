"""The common interface of the ImageNet-1k scorers: an image embedder plus one prototype per class.

Every scorer maps frames to embeddings ``e`` (N, D) and scores them against prototypes ``P`` (K, D)
with optional bias ``b`` and scale ``s``: ``logits = s · e Pᵀ + b`` (a linear classifier when ``P``
are its weight rows, CLIP zero-shot when ``P`` are normalised text embeddings and ``s`` its logit
scale). Scores are always reported over the 1000 ImageNet indices; when a scorer was built for a
subset of classes the other classes get logit ``-inf`` (probability 0).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from videonet_curate.imagenet import NUM_CLASSES
from videonet_curate.preprocess import ModelError, PreprocessSpec, resize_frames  # torch-only, re-exported

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UnknownModelError(ModelError, ValueError):
    """A ``--model`` spec that names no known model, architecture or pretrained tag."""


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    spec: PreprocessSpec,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 frames ``(N, H, W, 3)`` RGB -> normalised ``(N, 3, size, size)`` on ``device``.

    The uint8 frames travel to the device first (4x fewer bytes than floats), then the whole batch is
    resized at once with antialiasing (:func:`videonet_curate.preprocess.resize_frames`), as PIL does for
    the single images models were trained on.
    """
    return normalize_frames(resize_frames(frames, spec, device=device), spec, dtype=dtype)


def normalize_frames(
    batch: torch.Tensor, spec: PreprocessSpec, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 ``(N, 3, size, size)`` (from :func:`resize_frames`) -> the normalised network input, on the
    batch's device."""
    batch = batch.float().div_(255.0)
    batch = TF.normalize(batch, mean=list(spec.mean), std=list(spec.std))
    return batch.to(dtype)


def prototype_logits(
    embeddings: torch.Tensor, prototypes: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """``s · e Pᵀ + b``: the logits of embeddings (N, D) against prototypes (K, D)."""
    logits = F.linear(embeddings, prototypes, bias)
    return logits if scale == 1.0 else logits * scale


class ImageNetScorer(ABC):
    """An image embedder with ImageNet-1k class prototypes.

    Use: ``probs = s.class_probabilities(s.embed(s.preprocess(frames)))`` (or :meth:`score_frames`).
    """

    model_id: str  # fully identifies model and weights
    prototype_set: str  # what the prototypes are, e.g. "classifier-rows", "openai-80-templates"
    embedding_dim: int
    preprocess_spec: PreprocessSpec

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        model_id: str,
        prototype_set: str,
        prototypes: torch.Tensor,
        bias: torch.Tensor | None = None,
        logit_scale: float = 1.0,
        class_indices: Sequence[int] | None = None,
        preprocess_spec: PreprocessSpec,
        normalize_embeddings: bool = False,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.model_id = model_id
        self.prototype_set = prototype_set
        self.preprocess_spec = preprocess_spec
        self.normalize_embeddings = normalize_embeddings
        self.logit_scale = float(logit_scale)
        indices = list(range(NUM_CLASSES)) if class_indices is None else [int(i) for i in class_indices]
        if len(indices) != prototypes.shape[0]:
            raise ValueError(f"{prototypes.shape[0]} prototypes for {len(indices)} class indices")
        self.class_indices = torch.tensor(indices, dtype=torch.long)
        self.prototypes = prototypes.detach().float()
        self.bias = None if bias is None else bias.detach().float()
        self.embedding_dim = int(self.prototypes.shape[1])
        self.dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self.prototypes.device

    @property
    def num_prototypes(self) -> int:
        return int(self.prototypes.shape[0])

    def to(self, device: torch.device | str) -> ImageNetScorer:
        """Move model and prototypes to ``device``; returns self."""
        self.model.to(device)
        self.prototypes = self.prototypes.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        self.class_indices = self.class_indices.to(device)
        return self

    def set_precision(self, precision: str) -> ImageNetScorer:
        """Run the embedder in ``fp32``, ``fp16`` or ``bf16`` (half precisions are for GPUs); returns self.

        Prototypes and logits stay in float32 so the scores do not lose resolution.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
        self.dtype = PRECISIONS[precision]
        self.model.to(self.dtype)
        return self

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (N, H, W, 3) -> the network's input batch on the scorer's device."""
        return preprocess_frames(frames, self.preprocess_spec, device=self.device, dtype=self.dtype)

    @abstractmethod
    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's raw embedding of a preprocessed batch."""

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> embeddings (N, D), float32 (L2-normalised for CLIP scorers)."""
        with torch.inference_mode():
            emb = self._embed(batch.to(self.device, self.dtype)).float()
            return F.normalize(emb, dim=-1) if self.normalize_embeddings else emb

    def class_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) -> logits (N, 1000); classes outside the subset get ``-inf``."""
        with torch.inference_mode():
            embeddings = embeddings.to(self.device).float()
            logits = prototype_logits(embeddings, self.prototypes, self.bias, self.logit_scale)
            if self.num_prototypes == NUM_CLASSES:
                return logits
            full = logits.new_full((logits.shape[0], NUM_CLASSES), float("-inf"))
            full[:, self.class_indices] = logits
            return full

    def class_probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Softmax of :meth:`class_logits` (N, 1000)."""
        return self.class_logits(embeddings).softmax(dim=-1)

    def score_frames(self, frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Frames -> (embeddings (N, D), class probabilities (N, 1000)) as float32 numpy arrays."""
        emb = self.embed(self.preprocess(frames))
        return emb.cpu().numpy(), self.class_probabilities(emb).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """What a manifest should record about this scorer."""
        return {
            "model_id": self.model_id,
            "prototype_set": self.prototype_set,
            "embedding_dim": self.embedding_dim,
            "num_prototypes": self.num_prototypes,
            "preprocess": self.preprocess_spec.__dict__,
        }
