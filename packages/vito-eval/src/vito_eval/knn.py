"""k-nearest-neighbour classification on frozen features, as in DINO's kNN evaluation.

Cosine similarity (inner product of L2-normalised features, searched exactly with faiss: on the GPU
with ``faiss.knn_gpu`` when the installed faiss is a GPU build that sees a GPU, else a flat CPU index),
then each of the k neighbours votes for its class with weight exp(sim / T) (k=20, T=0.07 in DINO); k=1
is the plain nearest neighbour. The normalisation and the vote are vito-train's (``vito_train.knn``),
which its online monitor uses too; only the faiss search is eval's.
"""

from __future__ import annotations

import functools
import logging

import faiss
import numpy as np

from vito_train.knn import l2_normalize, weighted_votes

__all__ = ["gpu_resources", "knn_scores", "l2_normalize", "nearest_neighbours", "weighted_votes"]

log = logging.getLogger(__name__)


@functools.cache
def gpu_resources() -> object | None:
    """faiss's GPU resources (made once per process) when faiss is a GPU build that sees a GPU, else None.

    faiss-cpu has no ``StandardGpuResources``; a GPU build on a machine without a visible GPU reports 0."""
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.StandardGpuResources()
    return None


def nearest_neighbours(
    train: np.ndarray, query: np.ndarray, k: int, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, train indices), each (Q, k), most similar first, searched exactly.

    ``use_gpu``: None uses the GPU when faiss has one (`gpu_resources`), False never, True warns when
    there is none and searches on the CPU."""
    train_n, query_n = l2_normalize(train), l2_normalize(query)
    k = min(k, len(train_n))
    gpu = gpu_resources() if use_gpu in (None, True) else None
    if use_gpu and gpu is None:
        log.warning("use_gpu requested but faiss sees no GPU (faiss-cpu installed?); searching on CPU")
    if gpu is not None:
        return faiss.knn_gpu(gpu, query_n, train_n, k, metric=faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexFlatIP(train_n.shape[1])
    index.add(train_n)
    return index.search(query_n, k)


def knn_scores(
    train: np.ndarray,
    train_labels: np.ndarray,
    query: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> np.ndarray:
    """Temperature-weighted kNN class scores (Q, C) of ``query`` against labelled ``train`` features.

    With k=1 the argmax is the nearest neighbour's label."""
    sims, idx = nearest_neighbours(train, query, k)
    return weighted_votes(sims, np.asarray(train_labels)[idx], num_classes, temperature)
