"""An online kNN monitor (as solo-learn and DINO have): how good the encoder is while it trains.

Every ``monitor_every`` steps the online encoder (the one ``vito-train export`` writes) embeds a fixed
labelled subset of an image set (``--monitor fashion-mnist:DIR``, ``mnist:DIR`` or ``imagefolder:DIR``,
as ``vito-eval probe`` reads them): ``monitor_bank`` training images are the labelled bank,
``monitor_queries`` test images the queries, and kNN-20 top-1 (cosine, exp(sim/0.07) votes) goes to
metrics.jsonl, TensorBoard and loss.png. Features are the global average pool of the last stage, the
probe's default readout. The images are resized once (short side to ``image_size``, centre crop), so
each measurement costs one forward pass over bank + queries; its seconds are recorded with it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from vito_train.data.augment import normalize_on_device
from vito_train.data.image_sets import ImageSet, load_image_set
from vito_train.knn import knn_top1

log = logging.getLogger(__name__)

KNN_K = 20
KNN_TEMPERATURE = 0.07


def fixed_subset(n: int, size: int, seed: int) -> np.ndarray:
    """The same ``size`` indices of ``n`` for a seed (sorted), so every measurement sees one subset."""
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(size, n)])


def model_inputs(images: ImageSet, indices: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size): short side resized to ``size`` (bilinear, antialiased), centre crop."""
    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
    for row, i in enumerate(indices):
        image = TF.resize(images.image(int(i)), size, antialias=True)
        out[row] = TF.center_crop(image, [size, size])
    return out


@dataclass
class KnnMonitor:
    """A fixed labelled bank and query set, and the kNN-20 top-1 of an encoder on them."""

    spec: str
    bank: torch.Tensor
    bank_labels: np.ndarray
    queries: torch.Tensor
    query_labels: np.ndarray
    num_classes: int
    batch_size: int = 256
    seconds: float = 0.0  # all measurements so far
    measurements: int = 0

    @classmethod
    def load(cls, spec: str, image_size: int, bank_size: int, query_size: int, seed: int = 0) -> KnnMonitor:
        """Read the two splits of ``spec`` (ImageSetError on a bad spec) and resize the subsets once."""
        train, test = load_image_set(spec, "train"), load_image_set(spec, "test")
        bank_idx = fixed_subset(len(train), bank_size, seed)
        query_idx = fixed_subset(len(test), query_size, seed + 1)
        monitor = cls(
            spec,
            model_inputs(train, bank_idx, image_size),
            train.labels[bank_idx],
            model_inputs(test, query_idx, image_size),
            test.labels[query_idx],
            len(train.class_names),
        )
        log.info(
            "kNN monitor: %s, %d bank and %d query images at %d px",
            spec,
            len(bank_idx),
            len(query_idx),
            image_size,
        )
        return monitor

    @torch.no_grad()
    def embed(self, backbone: torch.nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            x = normalize_on_device(images[start : start + self.batch_size].to(device))
            out.append(backbone(x)[-1].float().mean(dim=(2, 3)).cpu())  # GAP of the last stage
        return torch.cat(out).numpy()

    def measure(self, backbone: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """kNN-20 top-1 (percent) of ``backbone`` (a ResNetTrunk) in eval mode; its mode is restored."""
        started = time.perf_counter()
        was_training = backbone.training
        backbone.eval()  # running BN statistics, and no update of them
        try:
            bank = self.embed(backbone, self.bank, device)
            queries = self.embed(backbone, self.queries, device)
        finally:
            backbone.train(was_training)
        top1 = knn_top1(
            bank, self.bank_labels, queries, self.query_labels, self.num_classes, KNN_K, KNN_TEMPERATURE
        )
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.measurements += 1
        return {"knn20_top1": 100.0 * top1, "monitor_s": elapsed}
