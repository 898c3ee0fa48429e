"""The dataset card of a published dataset: Hugging-Face-style YAML front matter, then counts, sources and
their licences, the model, the schema, the plots and how to check integrity (``publish.py`` writes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from videonet_curate import __version__
from videonet_curate.embeddings import EMBEDDINGS_FILENAME
from videonet_curate.manifest import MANIFEST_FILENAME, SCHEMA, STATUS_KEPT

CHECKSUMS_FILENAME = "checksums.sha256"
PLOTS_DIRNAME = "plots"

# What we can say about each source's licence without asking the web. Honest about what we do not know.
SOURCE_LICENCES = {
    "kinetics": (
        "Kinetics annotations: CC BY 4.0 (DeepMind). The videos are YouTube uploads owned by their "
        "uploaders and subject to YouTube's Terms of Service; they are referenced, not relicensed."
    ),
    "urls": "Videos fetched from the listed URLs: licence as set by each host or owner (not checked).",
    "local": "Local video files: licence as set by their owners (not recorded by the tool).",
}


def render_card(
    table: Any,
    metadata: dict[str, Any],
    summary: dict[str, Any],
    plots: dict[str, Path],
    with_embeddings: bool,
    title: str,
) -> str:
    """The dataset card: YAML front matter (Hugging Face style) then the human-readable description."""
    sources = summary["sources"]
    kept = table.filter(pc.equal(table.column("status"), STATUS_KEPT))
    size = _size_category(summary["kept"])
    front = [
        "---",
        f"pretty_name: {json.dumps(title)}",
        "license: other",
        "license_name: per-source-see-card",
        "task_categories:",
        "  - image-classification",
        "  - video-classification",
        "size_categories:",
        f"  - {size}",
        "tags:",
        "  - videonet",
        "  - vito",
        "  - self-supervised",
        "configs:",
        "  - config_name: default",
        "    data_files:",
        f"      - split: train\n        path: {MANIFEST_FILENAME}",
        "videonet:",
        f"  schema_version: {json.dumps(metadata.get('schema_version', ''))}",
        f"  tool_version: {json.dumps(metadata.get('tool_version', ''))}",
        f"  published_with: {json.dumps(__version__)}",
        f"  model_id: {json.dumps(metadata.get('model_id', ''))}",
        f"  prototype_set: {json.dumps(metadata.get('prototype_set', ''))}",
        f"  target: {json.dumps(summary.get('target'))}",
        f"  rows: {summary['rows']}",
        f"  kept: {summary['kept']}",
        f"  kept_classes: {summary['kept_classes']}",
        f"  with_embeddings: {str(with_embeddings).lower()}",
        "---",
    ]
    status_rows = "\n".join(f"| {k} | {v} |" for k, v in summary["status_counts"].items())
    licence_rows = "\n".join(
        f"| {s} | {int(pc.sum(pc.equal(kept.column('source'), s)).as_py() or 0)} | "
        f"{SOURCE_LICENCES.get(s, 'unknown: not recorded by the tool')} |"
        for s in sources
    )
    schema_rows = "\n".join(f"| `{f.name}` | `{f.type}` |" for f in SCHEMA)
    figures = "\n\n".join(
        f"![{name.replace('_', ' ')}]({PLOTS_DIRNAME}/{p.name})" for name, p in plots.items()
    )
    config = json.dumps(metadata.get("config", {}), indent=2, sort_keys=True)
    embeddings_note = (
        f"`{EMBEDDINGS_FILENAME}`: `clip_id` and `embedding` (fixed-size list of float32, the L2-normalised "
        "mean of the frame embeddings)."
        if with_embeddings
        else ""
    )
    return f"""{chr(10).join(front)}

# {title}

Video clips whose content matches ImageNet-1k classes, curated with `videonet-curate` (VideoNet, as in
VITO: "Self-supervised video pretraining yields general image representations"). Each row of
`{MANIFEST_FILENAME}` is one candidate clip; the trainer uses the rows with `status == "kept"`.
The videos themselves are not part of this directory: `path` is relative to the directory the manifest
was built in, and `source`/`source_id`/`source_start_s`/`source_end_s` say where each clip came from.

## Counts

{summary["kept"]} clips kept of {summary["rows"]} candidates, {summary["kept_classes"]} classes present,
{summary["kept_hours"]:.2f} hours kept. Total-variation distance to the `{summary.get("target")}` target
histogram: {_number(summary["tv_to_target"])}; KL(kept || target): {_number(summary["kl_to_target"])} nats
(epsilon {summary["kl_epsilon"]:g} smoothing).

| status | rows |
| --- | --- |
{status_rows}

## Sources and licences

| source | kept clips | licence |
| --- | --- | --- |
{licence_rows}

## Model and prototypes

- model: `{metadata.get("model_id", "") or "not recorded"}`
- prototype set: `{metadata.get("prototype_set", "") or "not recorded"}`
- manifest schema version {metadata.get("schema_version", "")}, written by videonet-curate
  {metadata.get("tool_version", "")}

Build configuration:

```json
{config}
```

## Schema

| column | type |
| --- | --- |
{schema_rows}

{embeddings_note}

## Plots

{figures}

## Integrity

`{CHECKSUMS_FILENAME}` lists the SHA-256 of every other file. Check with `videonet-curate verify DIR`
(also checks the schema) or `sha256sum -c {CHECKSUMS_FILENAME}`.
"""


def _number(value: float | None) -> str:
    return "n/a (no kept clips)" if value is None else f"{value:.4f}"


def _size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return name
    return "10M<n<100M"
