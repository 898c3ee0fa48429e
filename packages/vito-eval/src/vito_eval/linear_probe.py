"""Linear probe: multinomial logistic regression on standardised frozen features.

The solver is full-batch L-BFGS in torch (float64, strong-Wolfe line search), which is what probes at
this scale use; it is deterministic for a given machine and thread count. The L2 strength is chosen
on a stratified validation split of the training set, then the probe is refit on the whole training set.
Used by `vito-eval probe`, `ucf101` and the linear head of `segment`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DEFAULT_L2_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 0, 7))


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension z-scoring with training statistics; constant dimensions are left centred."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale


def fit_logistic_regression(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    l2: float,
    max_iter: int = 500,
    tol: float = 1e-7,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise (1/N) sum_i -log softmax(W x_i + b)_{y_i} + (l2/2) ||W||_F^2 with L-BFGS.

    The bias is not penalised. This is scikit-learn's multinomial LogisticRegression objective
    (C sum_i loss_i + ||W||^2 / 2) divided by C N, i.e. the same minimiser for C = 1 / (l2 N).
    Returns (W of shape (C, D), b of shape (C,)).
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    dim = xt.shape[1]
    w0, b0 = init if init is not None else (np.zeros((num_classes, dim)), np.zeros(num_classes))
    weight = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(xt @ weight.T + bias, yt) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with _solver_threads(xt.shape[0] * dim * num_classes):
        optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()


@contextmanager
def _solver_threads(work: int) -> Iterator[None]:
    """One thread for small problems: thread start-up dominates them, and on a shared machine
    oversubscribed threads made a 500 x 512 probe 10-30x slower than one thread (measured here)."""
    previous = torch.get_num_threads()
    if work < 50_000_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stratified_validation_split(
    labels: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): ``fraction`` of each class (rounded, at least one; classes
    with one sample stay in train), chosen with a seeded permutation."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: standardiser, weights, the chosen L2 and the validation accuracy of each tried L2."""

    standardizer: Standardizer
    weight: np.ndarray
    bias: np.ndarray
    l2: float
    validation_accuracy: dict[float, float] = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.standardizer.transform(x) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(self.logits(x)), dim=1).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 500,
) -> LinearProbe:
    """Standardise, pick the L2 strength with the best validation accuracy (ties: the stronger), refit
    on all training features with it. A one-element grid skips the validation split."""
    labels = np.asarray(labels, dtype=np.int64)
    scores: dict[float, float] = {}
    best = l2_grid[0]
    if len(l2_grid) > 1:
        tr, va = stratified_validation_split(labels, val_fraction, seed)
        if len(va) == 0:
            raise ValueError("too few training samples to hold out a validation split; pass a single L2")
        std = Standardizer.fit(features[tr])
        xtr, xva = std.transform(features[tr]), std.transform(features[va])
        init = None
        for l2 in sorted(l2_grid, reverse=True):  # strong to weak, each warm-started from the last
            init = fit_logistic_regression(xtr, labels[tr], num_classes, l2, max_iter, init=init)
            scores[l2] = float(((xva @ init[0].T + init[1]).argmax(1) == labels[va]).mean())
            log.debug("l2=%g validation accuracy %.4f", l2, scores[l2])
        best = max(sorted(scores, reverse=True), key=lambda l2: scores[l2])
    std = Standardizer.fit(features)
    weight, bias = fit_logistic_regression(std.transform(features), labels, num_classes, best, max_iter)
    return LinearProbe(std, weight, bias, best, scores)
