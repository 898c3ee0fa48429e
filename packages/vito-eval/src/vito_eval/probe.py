"""Linear probe: multinomial logistic regression on standardised frozen features.

The solver is full-batch L-BFGS in torch (float64, strong-Wolfe line search), which is what probes at
this scale use; it is deterministic for a given machine and thread count. The L2 strength is chosen
on a stratified validation split of the training set, then the probe is refit on the whole training set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vito_eval import __version__
from vito_eval.datasets import ImageDataset, ImageSplit, load_dataset, stratified_subsample, transform_id
from vito_eval.encoders import FEATURE_KINDS, Encoder, load_encoder
from vito_eval.errors import EvalInputError
from vito_eval.features import DEFAULT_CACHE_DIR, cached_features
from vito_eval.knn import knn_scores
from vito_eval.report import classification_summary, plot_confusion, slug, write_json_atomic

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


# --- The `vito-eval probe` command body: encoders x one dataset -> linear and kNN accuracies. ---


@dataclass
class ProbeEvalConfig:
    """Options of `vito-eval probe` (see its --help); ``image_size=None`` takes the dataset's default."""

    encoders: list[str]
    dataset: str
    out: Path | None = None
    features: str = "gap"
    image_size: int | None = None
    batch_size: int = 64
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    device: str = "cpu"
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    knn_k: int = 20
    knn_temperature: float = 0.07
    num_workers: int = 0
    progress: bool = False


def evaluate_encoder(
    encoder: Encoder,
    dataset: ImageDataset,
    train: ImageSplit,
    test: ImageSplit,
    config: ProbeEvalConfig,
    image_size: int,
) -> dict[str, Any]:
    """Linear probe and kNN of one encoder; the returned dict is one entry of the JSON's ``results``."""
    timing: dict[str, Any] = {}
    feats = {}
    for name, split in (("train", train), ("test", test)):
        start = time.perf_counter()
        feats[name] = cached_features(
            encoder,
            dataset,
            split,
            image_size,
            config.cache_dir,
            config.batch_size,
            config.num_workers,
            config.progress,
            desc=f"{encoder.name} {name}",
        )
        timing[f"extract_{name}_s"] = time.perf_counter() - start
        timing[f"{name}_from_cache"] = feats[name].from_cache
    timing["extract_s"] = timing["extract_train_s"] + timing["extract_test_s"]
    xtr, ytr, xte, yte = feats["train"].features, train.labels, feats["test"].features, test.labels
    classes = dataset.class_names

    start = time.perf_counter()
    probe = fit_linear_probe(xtr, ytr, len(classes), config.l2_grid, seed=config.seed)
    linear = classification_summary(probe.logits(xte), yte, classes)
    linear.update(
        l2=probe.l2, validation_accuracy={f"{k:g}": v for k, v in probe.validation_accuracy.items()}
    )
    timing["linear_s"] = time.perf_counter() - start

    start = time.perf_counter()
    knn = {
        f"k{config.knn_k}": classification_summary(
            knn_scores(xtr, ytr, xte, len(classes), config.knn_k, config.knn_temperature), yte, classes
        )
    }
    nearest = classification_summary(knn_scores(xtr, ytr, xte, len(classes), 1), yte, classes)
    nearest.pop("top5", None)  # one vote per query: a top-5 would only rank classes by index
    knn["k1"] = nearest
    timing["knn_s"] = time.perf_counter() - start
    return {
        "encoder": encoder.name,
        "source": encoder.source,
        "arch": encoder.arch,
        "features": encoder.features,
        "weights_sha256": encoder.weights_hash,
        "feature_dim": int(xtr.shape[1]),
        "linear": linear,
        "knn": knn,
        "knn_temperature": config.knn_temperature,
        "timing": timing,
    }


def run_probe_eval(config: ProbeEvalConfig) -> dict[str, Any]:
    """Load the dataset and every encoder (bad specs fail before any work), evaluate each, write
    ``config.out`` (JSON) and one confusion-matrix PNG per encoder beside it; return the JSON payload."""
    if config.features not in FEATURE_KINDS:
        raise EvalInputError(f"--features {config.features!r}: choose one of {FEATURE_KINDS}")
    if not config.encoders:
        raise EvalInputError("give at least one --encoder")
    for option, value, least in (
        ("--image-size", config.image_size, 8),
        ("--batch-size", config.batch_size, 1),
        ("--knn-k", config.knn_k, 1),
    ):
        if value is not None and value < least:
            raise EvalInputError(f"{option} must be at least {least}, got {value}")
    dataset = load_dataset(config.dataset)
    image_size = config.image_size or dataset.default_image_size
    if config.train_limit is not None and config.train_limit < 2 * dataset.num_classes:
        raise EvalInputError(
            f"--train-limit {config.train_limit} is below 2 per class ({dataset.num_classes} classes)"
        )
    if config.test_limit is not None and config.test_limit < 1:
        raise EvalInputError(f"--test-limit must be positive, got {config.test_limit}")
    train = dataset.train.subset(stratified_subsample(dataset.train.labels, config.train_limit, config.seed))
    test = dataset.test.subset(stratified_subsample(dataset.test.labels, config.test_limit, config.seed))
    encoders = []
    for spec in config.encoders:
        start = time.perf_counter()
        encoders.append((load_encoder(spec, config.features, config.device), time.perf_counter() - start))  # type: ignore[arg-type]
    results = []
    for encoder, load_s in encoders:
        log.info("evaluating %s on %s", encoder.name, dataset.spec)
        result = evaluate_encoder(encoder, dataset, train, test, config, image_size)
        result["timing"]["load_s"] = load_s
        if config.out is not None:
            png = config.out.with_name(f"{config.out.stem}.{slug(encoder.name)}.confusion.png")
            kind, top1 = dataset.spec.split(":")[0], result["linear"]["top1"]
            title = f"{encoder.name}: linear probe on {kind} (top-1 {top1:.3f})"
            plot_confusion(np.asarray(result["linear"]["confusion"]), dataset.class_names, title, png)
            result["confusion_png"] = png.name
        results.append(result)
    payload = {
        "tool": f"vito-eval {__version__}",
        "command": "probe",
        "dataset": {
            "spec": dataset.spec,
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
            "train_size": len(train),
            "test_size": len(test),
            "train_limit": config.train_limit,
            "test_limit": config.test_limit,
            "seed": config.seed,
            "image_size": image_size,
            "transform": transform_id(image_size),
        },
        "probe": {
            "solver": "torch L-BFGS, float64, standardised features",
            "l2_grid": list(config.l2_grid),
            "val_fraction": 0.2,
            "knn_k": config.knn_k,
            "knn_temperature": config.knn_temperature,
        },
        "results": results,
    }
    if config.out is not None:
        write_json_atomic(config.out, payload)
    return payload
