"""Classification metrics and how results are shown: JSON (atomic), confusion-matrix PNG, rich table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from videonet_curate.storage import atomic_path


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k highest scores (ties broken by class order)."""
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == np.asarray(labels)[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for classes absent from the test set."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def classification_summary(
    scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """top-1 (and top-5 when there are more than 5 classes), per-class accuracy and the confusion matrix."""
    num_classes = len(class_names)
    matrix = confusion_matrix(labels, scores.argmax(axis=1), num_classes)
    summary: dict[str, Any] = {"top1": topk_accuracy(scores, labels, 1)}
    if num_classes > 5:
        summary["top5"] = topk_accuracy(scores, labels, 5)
    summary["per_class"] = {
        name: (None if np.isnan(acc) else float(acc))
        for name, acc in zip(class_names, per_class_accuracy(matrix), strict=True)
    }
    summary["confusion"] = matrix.tolist()
    return summary


def slug(text: str) -> str:
    """A file-name-safe version of an encoder spec."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "encoder"


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix as a PNG (written to a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = matrix.sum(axis=1, keepdims=True)
    normalised = matrix / np.maximum(totals, 1)
    n = len(class_names)
    size = max(4.0, min(16.0, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), labels=class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=class_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def results_table(results: Sequence[dict[str, Any]], title: str) -> Table:
    """One row per encoder, side by side: linear and kNN accuracies, feature dimension, time."""
    table = Table(title=title)
    k = next((key for key in results[0]["knn"] if key != "k1"), "k1") if results else "k1"
    for column in (
        "encoder",
        "dim",
        "linear top-1",
        "linear top-5",
        f"kNN-{k[1:]} top-1",
        f"kNN-{k[1:]} top-5",
        "1-NN top-1",
        "L2",
        "extract s",
        "fit s",
    ):
        table.add_column(
            column,
            justify="left" if column == "encoder" else "right",
            no_wrap=column == "encoder",
            overflow="fold",
        )
    for r in results:
        linear, knn, knn1 = r["linear"], r["knn"][k], r["knn"]["k1"]
        table.add_row(
            r["encoder"],
            str(r["feature_dim"]),
            _pct(linear["top1"]),
            _pct(linear.get("top5")),
            _pct(knn["top1"]),
            _pct(knn.get("top5")),
            _pct(knn1["top1"]),
            f"{linear['l2']:.0e}",
            "cached"
            if r["timing"].get("train_from_cache") and r["timing"].get("test_from_cache")
            else f"{r['timing']['extract_s']:.1f}",
            f"{r['timing']['linear_s'] + r['timing']['knn_s']:.1f}",
        )
    return table
