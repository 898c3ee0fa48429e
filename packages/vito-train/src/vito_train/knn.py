"""Temperature-weighted k-nearest-neighbour votes on L2-normalised features (DINO's kNN evaluation).

Each of the k most cosine-similar labelled features votes for its class with weight exp(sim / T)
(k=20, T=0.07 in DINO). The trainer's online monitor searches exactly with one matrix product (its
bank is a few thousand vectors); vito-eval reuses the normalisation and the vote and searches its
larger sets with faiss.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def weighted_votes(
    similarities: np.ndarray, neighbour_labels: np.ndarray, num_classes: int, temperature: float = 0.07
) -> np.ndarray:
    """Class scores (Q, C): score_c = sum over neighbours j of class c of exp(sim_j / T) (DINO eq.)."""
    weights = np.exp(similarities.astype(np.float64) / temperature)
    scores = np.zeros((len(similarities), num_classes))
    np.add.at(scores, (np.arange(len(similarities))[:, None], neighbour_labels), weights)
    return scores


def exact_neighbours(bank: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, bank indices), each (Q, k), most similar first, by brute force."""
    sims = l2_normalize(query) @ l2_normalize(bank).T
    k = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(idx, order, axis=1)


def knn_top1(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    query: np.ndarray,
    query_labels: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (0..1) of the weighted kNN vote of ``query`` against the labelled ``bank``."""
    sims, idx = exact_neighbours(bank, query, k)
    scores = weighted_votes(sims, np.asarray(bank_labels)[idx], num_classes, temperature)
    return float((scores.argmax(axis=1) == np.asarray(query_labels)).mean())
