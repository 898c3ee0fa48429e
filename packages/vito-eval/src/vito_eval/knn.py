"""k-nearest-neighbour classification on frozen features, as in DINO's kNN evaluation.

Cosine similarity (inner product of L2-normalised features, searched exactly with faiss), then each of
the k neighbours votes for its class with weight exp(sim / T) (k=20, T=0.07 in DINO); k=1 is the plain
nearest neighbour. The normalisation and the vote are vito-train's (``vito_train.knn``), which its
online monitor uses too; only the faiss search is eval's.
"""

from __future__ import annotations

import faiss
import numpy as np

from vito_train.knn import l2_normalize, weighted_votes

__all__ = ["knn_scores", "l2_normalize", "nearest_neighbours", "weighted_votes"]


def nearest_neighbours(train: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, train indices), each (Q, k), most similar first (exact faiss IndexFlatIP)."""
    train_n, query_n = l2_normalize(train), l2_normalize(query)
    k = min(k, len(train_n))
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
