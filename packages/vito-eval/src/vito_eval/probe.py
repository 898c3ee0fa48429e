"""`vito-eval probe`: encoders x one classification dataset -> linear-probe and kNN accuracies.

Features are extracted once and cached (`vito_eval.features`); the linear probe is
`vito_eval.linear_probe.fit_linear_probe`, the kNN classifier `vito_eval.knn`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate.storage import atomic_write_json
from vito_eval import __version__
from vito_eval.datasets import ImageDataset, ImageSplit, load_dataset, stratified_subsample, transform_id
from vito_eval.encoders import FEATURE_KINDS, Encoder, load_encoder
from vito_eval.errors import EvalInputError
from vito_eval.feature_cache import DEFAULT_CACHE_DIR
from vito_eval.features import cached_features
from vito_eval.knn import knn_scores
from vito_eval.linear_probe import DEFAULT_L2_GRID, fit_linear_probe
from vito_eval.report import classification_summary, plot_confusion, slug
from vito_eval.runtime import start_throughput

log = logging.getLogger(__name__)


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
    precision: str = "auto"  # the encoder's forward: auto (bf16 on CUDA), fp32, bf16


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
    throughput = start_throughput(encoder.device, "images", measures="encoder forward of uncached splits")
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
            throughput=throughput,
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
        "precision": encoder.precision,
        "throughput": throughput.report(),
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
        encoder = load_encoder(spec, config.features, config.device, config.precision)  # type: ignore[arg-type]
        encoders.append((encoder, time.perf_counter() - start))
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
        atomic_write_json(config.out, payload)
    return payload
