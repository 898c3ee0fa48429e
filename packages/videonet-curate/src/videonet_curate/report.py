"""The curation report: summary statistics, PNG plots and an HTML page for an output directory.

``write_report(OUT)`` reads ``OUT/manifest.parquet`` (and ``OUT/embeddings.parquet`` when present) and
writes ``OUT/report/`` with ``index.html``, ``summary.json`` and four plots: the kept class histogram
against the target, the score distribution per status, the nearest-neighbour similarity of the clips
(with the duplicate threshold), and the status breakdown.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from videonet_curate import dedup, targets  # noqa: E402
from videonet_curate.embeddings import EMBEDDINGS_FILENAME, embedding_matrix, read_embeddings  # noqa: E402
from videonet_curate.manifest import (  # noqa: E402
    MANIFEST_FILENAME,
    STATUSES,
    read_manifest,
    read_metadata,
)
from videonet_curate.safepath import contained
from videonet_curate.storage import atomic_path, atomic_write_text  # noqa: E402
from videonet_curate.summary import json_safe, kept_class_counts, summarize  # noqa: E402

log = logging.getLogger(__name__)

REPORT_DIRNAME = "report"
PLOTS = {
    "class_histogram": "class_histogram.png",
    "score_distribution": "score_distribution.png",
    "nearest_similarity": "nearest_similarity.png",
    "status_breakdown": "status_breakdown.png",
}


@dataclass(frozen=True)
class ReportPaths:
    directory: Path
    html: Path
    summary: Path
    plots: dict[str, Path]


def nearest_similarities(embeddings: pa.Table, **search_options: Any) -> tuple[np.ndarray, np.ndarray]:
    """(clip_ids, cosine similarity of each clip to its nearest other clip) via the dedup search."""
    matrix = embedding_matrix(embeddings)
    ids = embeddings.column("clip_id").to_numpy(zero_copy_only=False)
    if len(matrix) < 2:
        return ids, np.full(len(matrix), np.nan, np.float32)
    # threshold 1.0: we only want the nearest-neighbour similarities, not the groups
    result = dedup.find_duplicates(matrix, np.zeros(len(matrix)), 1.0, **search_options)
    return ids, result.nearest_sim


def plot_class_histogram(counts: np.ndarray, target: np.ndarray, path: Path) -> None:
    """Kept clips per class against the target (scaled to the kept total): the one class histogram."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    classes = np.arange(len(counts))
    # one filled step patch instead of 1,000 bar rectangles: same picture, a fraction of the drawing time
    ax.stairs(counts, np.arange(len(counts) + 1) - 0.5, fill=True, color="tab:blue", label="kept clips")
    if counts.sum() > 0:
        ax.plot(
            classes,
            target / target.sum() * counts.sum(),
            color="tab:red",
            lw=1.0,
            label="target (scaled to the kept total)",
        )
    ax.set_xlabel("ImageNet-1k class index")
    ax.set_ylabel("clips")
    ax.set_title(f"Kept clips per class ({int((counts > 0).sum())} of {len(counts)} classes present)")
    ax.legend(loc="upper right")
    _save(fig, path)


def _plot_scores(table: pa.Table, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    status = table.column("status").to_numpy(zero_copy_only=False)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    bins = np.linspace(0, 1, 41)
    for name in STATUSES:
        values = scores[(status == name) & np.isfinite(scores)]
        if len(values):
            ax.hist(
                np.clip(values, 0, 1), bins=bins, histtype="step", lw=1.5, label=f"{name} ({len(values)})"
            )
    ax.set_xlabel("score (mean probability of the assigned class)")
    ax.set_ylabel("clips")
    ax.set_title("Score distribution by status")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    _save(fig, path)


def _plot_nearest(nearest: np.ndarray | None, threshold: float | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = nearest[np.isfinite(nearest)] if nearest is not None else np.empty(0)
    if len(values):
        ax.hist(values, bins=50, color="tab:purple")
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", label=f"--dup-threshold {threshold:g}")
            ax.legend()
    else:
        ax.text(
            0.5,
            0.5,
            "no embeddings.parquet: nothing to show",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("cosine similarity to the nearest other clip")
    ax.set_ylabel("clips")
    ax.set_title("Nearest-neighbour similarity")
    _save(fig, path)


def _plot_status(summary: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(summary["status_counts"])
    values = [summary["status_counts"][n] for n in names]
    bars = ax.barh(names, values, color="tab:green")
    ax.bar_label(bars, labels=[str(v) for v in values], padding=3)
    ax.set_xlabel("rows")
    ax.set_title(f"Status of {summary['rows']} candidates")
    ax.invert_yaxis()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def curation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """The build's curation settings: ``config["curation"]`` (as `build` writes it), else the top level."""
    config = metadata.get("config") or {}
    return {**config, **(config.get("curation") or {})}


def target_from_metadata(metadata: dict[str, Any], override: str | None = None) -> tuple[str, np.ndarray]:
    """The target given, else the one the build used (config ``target``), else imagenet."""
    spec = override or str(curation_config(metadata).get("target") or "imagenet")
    try:
        return spec, targets.load_target(spec)
    except targets.TargetError:
        if override:
            raise
        log.warning("the build's target %r is not readable here; reporting against imagenet", spec)
        return "imagenet", targets.load_target("imagenet")


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    report_dir: str | os.PathLike[str] | None = None,
    target: str | None = None,
    dup_threshold: float | None = None,
) -> ReportPaths:
    """Write ``index.html``, ``summary.json`` and the PNG plots for the manifest in ``out_dir``."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_FILENAME if out_dir.is_dir() else out_dir
    table = read_manifest(manifest_path)
    metadata = read_metadata(manifest_path)
    target_name, target_weights = target_from_metadata(metadata, target)
    config = curation_config(metadata)
    if dup_threshold is None and config.get("dup_threshold") is not None:
        dup_threshold = float(config["dup_threshold"])
    nearest = None
    embeddings_path = manifest_path.parent / EMBEDDINGS_FILENAME
    if embeddings_path.exists():
        _, nearest = nearest_similarities(read_embeddings(embeddings_path))
    directory = Path(report_dir) if report_dir else manifest_path.parent / REPORT_DIRNAME
    contained(directory.parent, directory)  # OUT/report planted as a link elsewhere: write nothing there
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarize(table, target_weights, metadata, nearest)
    summary["target"] = target_name
    summary["dup_threshold"] = dup_threshold
    plots = {name: directory / filename for name, filename in PLOTS.items()}
    counts = kept_class_counts(table, len(target_weights))
    plot_class_histogram(counts, target_weights, plots["class_histogram"])
    _plot_scores(table, plots["score_distribution"])
    _plot_nearest(nearest, dup_threshold, plots["nearest_similarity"])
    _plot_status(summary, plots["status_breakdown"])
    summary_path = directory / "summary.json"
    atomic_write_text(
        summary_path, json.dumps(json_safe(summary), indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    html_path = directory / "index.html"
    atomic_write_text(html_path, render_html(summary, plots))
    log.info("report written to %s", html_path)
    return ReportPaths(directory, html_path, summary_path, plots)


def render_html(summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """A self-contained page: the summary table and the plots by relative path."""
    rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
    )
    images = "\n".join(
        f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
        for name, p in plots.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VideoNet curation report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}th{{text-align:left;padding-right:1em}}
td{{font-family:monospace}}img{{max-width:100%}}figure{{margin:1em 0}}</style></head>
<body><h1>VideoNet curation report</h1>
<p>{summary["kept"]} of {summary["rows"]} candidate clips kept, {summary["kept_classes"]} classes present;
total variation to the {html.escape(str(summary.get("target")))} target: {summary["tv_to_target"]:.4f}.</p>
<table>
{rows}
</table>
{images}
</body></html>
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)
