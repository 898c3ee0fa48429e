"""The manifest contract (schema v1): the single home of its columns, statuses and I/O.

Every candidate clip keeps one row to the end of a curation run. ``status`` says what became of it
and, when it was not kept, ``reason`` says why (a code from :data:`REASONS`) and ``detail`` says it in
words. Extend by adding columns, never by renaming: readers must ignore columns they do not know.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from videonet_curate import __version__
from videonet_curate.storage import atomic_path
from videonet_curate.uri import StorageOptions, arrow_location, exists, is_uri, join

SCHEMA_VERSION = "1"
MANIFEST_FILENAME = "manifest.parquet"

# What became of a candidate. Only "kept" rows are used for training.
STATUS_KEPT = "kept"
STATUS_FAILED = "failed"  # could not be fetched or decoded; see reason
STATUS_MISSING = "missing"  # absent from a local mirror
STATUS_LOW_SCORE = "low_score"  # decoded and scored, below --min-score
STATUS_DUPLICATE = "duplicate"  # near-duplicate of dup_of
STATUS_REBALANCED_OUT = "rebalanced_out"  # dropped to match the target class histogram
STATUSES = (
    STATUS_KEPT,
    STATUS_FAILED,
    STATUS_MISSING,
    STATUS_LOW_SCORE,
    STATUS_DUPLICATE,
    STATUS_REBALANCED_OUT,
)

# The failure taxonomy: reason codes. Transient ones may succeed when retried.
REASONS: dict[str, str] = {
    "unavailable": "the video was removed, is private, copyright-blocked or geo-blocked",
    "blocked": "the host throttled or refused us (HTTP 429, bot check)",
    "network": "timeout, refused or reset connection, DNS failure",
    "http_error": "the server answered with another HTTP error",
    "not_a_video": "the bytes are not a video container (HTML page, text, empty file)",
    "decode_error": "the container opened but frames could not be decoded (truncated, corrupt)",
    "too_short": "the video holds less than --min-clip-seconds of frames (default 1 s)",
    "missing_from_mirror": "the clip is not in the local mirror",
    "bad_id": "the id or file name is unsafe as a path (not a YouTube id, not valid UTF-8)",
    "low_score": "the best ImageNet class scored below --min-score",
    "duplicate": "a near-duplicate of a higher-scoring clip (see dup_of)",
    "rebalanced_out": "dropped to bring the class histogram toward the target",
    "internal": "a bug in this tool: please report it with the detail text",
}
TRANSIENT_REASONS = frozenset({"blocked", "network"})
# Statuses the table steps on the driver give (score cut, dedup, rebalance); a re-cut starts from "kept".
CURATION_STATUSES = (STATUS_LOW_SCORE, STATUS_DUPLICATE, STATUS_REBALANCED_OUT)

SCHEMA = pa.schema(
    [
        # identity
        pa.field("clip_id", pa.string(), nullable=False),  # stable, file-name safe
        pa.field("source", pa.string(), nullable=False),  # local | kinetics | urls
        pa.field("source_id", pa.string(), nullable=False),  # youtube id, url, or input-relative path
        pa.field("path", pa.string()),  # video file, relative to the manifest's directory
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        # outcome
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),  # a key of REASONS, null when kept
        pa.field("detail", pa.string()),  # human-readable explanation of reason
        # ImageNet-1k assignment
        pa.field("label", pa.int32()),
        pa.field("label_name", pa.string()),
        pa.field("score", pa.float32()),  # mean class probability of label over the sampled frames
        pa.field("margin", pa.float32()),  # score of top-1 minus score of top-2
        pa.field("top5_labels", pa.list_(pa.int32())),
        pa.field("top5_scores", pa.list_(pa.float32())),
        # what the probe saw
        pa.field("duration_s", pa.float64()),  # whole file
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("frames_sampled", pa.int32()),
        # source extras
        pa.field("source_label", pa.string()),  # e.g. the Kinetics action label
        # the segment in the original source (e.g. the YouTube video) when `path` holds a trimmed copy;
        # start_s/end_s are always times within the file at `path`
        pa.field("source_start_s", pa.float64()),
        pa.field("source_end_s", pa.float64()),
        pa.field("attempts", pa.int32()),
        # curation
        pa.field("dup_of", pa.string()),
    ]
)
REQUIRED_COLUMNS = (
    "clip_id",
    "source",
    "source_id",
    "path",
    "start_s",
    "end_s",
    "status",
    "reason",
    "label",
    "label_name",
    "score",
)


class ManifestError(ValueError):
    """A manifest that cannot be read or does not honour the contract."""


def empty_row(**values: Any) -> dict[str, Any]:
    """A row with every schema column present (null unless given)."""
    unknown = set(values) - set(SCHEMA.names)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    row = dict.fromkeys(SCHEMA.names)
    row.update(values)
    return row


def rows_to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    """Build a schema-conformant table; missing columns become null."""
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Order and cast ``table`` to the v1 schema, adding missing optional columns as nulls.

    Columns beyond the schema are kept at the end (extensions by later versions are allowed).
    """
    arrays, fields = [], []
    for field in SCHEMA:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        elif field.name in REQUIRED_COLUMNS and field.name not in ("reason", "label", "label_name", "score"):
            raise ManifestError(f"manifest lacks required column {field.name!r}")
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
        fields.append(field)
    for name in table.column_names:
        if name not in SCHEMA.names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def validate(table: pa.Table) -> None:
    """Raise :class:`ManifestError` unless ``table`` honours the v1 contract."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"manifest lacks required columns {missing}")
    ids = table.column("clip_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dups = [v["values"] for v in counts.filter(pc.greater(counts.field("counts"), 1)).to_pylist()]
        raise ManifestError(f"clip_id is not unique: {sorted(dups)[:5]} ...")
    bad_status = set(pc.unique(table.column("status")).to_pylist()) - set(STATUSES)
    if bad_status:
        raise ManifestError(f"unknown status values {sorted(map(str, bad_status))}; expected {STATUSES}")
    bad_reason = {r for r in pc.unique(table.column("reason")).to_pylist() if r is not None} - set(REASONS)
    if bad_reason:
        raise ManifestError(f"unknown reason codes {sorted(bad_reason)}; expected one of {sorted(REASONS)}")
    kept = table.filter(pc.equal(table.column("status"), STATUS_KEPT))
    incomplete = kept.filter(pc.or_(pc.is_null(kept.column("label")), pc.is_null(kept.column("path"))))
    if incomplete.num_rows:
        raise ManifestError(
            f"kept clip {incomplete.column('clip_id')[0].as_py()!r} has no label or no path "
            f"({incomplete.num_rows} kept rows are incomplete)"
        )


def build_metadata(
    *, model_id: str | None, prototype_set: str | None, config: Mapping[str, Any] | None
) -> dict[bytes, bytes]:
    """Parquet key-value metadata: schema and tool versions, the model, its prototypes, the config."""
    meta = {
        "videonet.schema_version": SCHEMA_VERSION,
        "videonet.tool_version": __version__,
        "videonet.model_id": model_id or "",
        "videonet.prototype_set": prototype_set or "",
        "videonet.config": json.dumps(dict(config or {}), sort_keys=True, default=str),
    }
    return {k.encode(): v.encode() for k, v in meta.items()}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The videonet key-value metadata of a manifest file, decoded (config parsed from JSON)."""
    where, filesystem = arrow_location(path)
    raw = pq.read_schema(where, filesystem=filesystem).metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"videonet.")}
    short = {k.removeprefix("videonet."): v for k, v in meta.items()}
    if "config" in short:
        short["config"] = json.loads(short["config"] or "{}")
    return short


def atomic_write_table(
    table: pa.Table, path: str | os.PathLike[str], *, options: StorageOptions | None = None, **kwargs: Any
) -> Path | str:
    """Write Parquet next to ``path`` under a temporary name, fsync, then rename: never a partial file
    (a URI: written locally, then uploaded in one PUT). Returns the path (the URI for a URI)."""
    if is_uri(path):
        with atomic_path(path, options) as tmp:
            pq.write_table(table, tmp, **kwargs)
        return str(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return path


def write_manifest(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    model_id: str | None = None,
    prototype_set: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Validate, attach metadata and atomically write a manifest."""
    table = conform(table)
    validate(table)
    metadata = {
        **(table.schema.metadata or {}),
        **build_metadata(model_id=model_id, prototype_set=prototype_set, config=config),
    }
    return atomic_write_table(table.replace_schema_metadata(metadata), path)


def read_manifest(path: str | os.PathLike[str], *, validate_rows: bool = True) -> pa.Table:
    """Read a manifest (a file, or a directory holding ``manifest.parquet``; or their URIs) and check
    the contract."""
    if is_uri(path):
        if not str(path).endswith(".parquet"):
            path = join(path, MANIFEST_FILENAME)
    else:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILENAME
    if not exists(path):
        raise ManifestError(
            f"no manifest at {path}: pass the manifest.parquet written by `videonet-curate build` "
            "(or its output directory)"
        )
    try:
        where, filesystem = arrow_location(path)
        table = pq.read_table(where, filesystem=filesystem)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path} is not a readable Parquet file: {exc}") from exc
    version = (table.schema.metadata or {}).get(b"videonet.schema_version", b"").decode()
    if version and version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has manifest schema version {version}; this tool reads version {SCHEMA_VERSION}"
        )
    table = conform(table)
    if validate_rows:
        validate(table)
    return table


def kept_rows(table: pa.Table) -> pa.Table:
    """Only the rows the trainer uses."""
    return table.filter(pc.equal(table.column("status"), STATUS_KEPT))


def resolve_clip_path(manifest_path: str | os.PathLike[str], relative: str) -> Path | str:
    """Where a clip is: its ``path`` column as is when that is a URI (``s3://``), the local path of a
    ``file://`` URI, or the absolute path of a path relative to the manifest's directory."""
    if is_uri(relative):
        return relative
    if relative.startswith("file://"):
        return Path(relative[len("file://") :])
    if is_uri(manifest_path):
        raise ManifestError(
            f"{manifest_path}: clip path {relative!r} is relative to a manifest in object storage; "
            "such a manifest holds URIs (rebuild it, or copy the manifest next to its clips)"
        )
    base = Path(manifest_path)
    if base.suffix == ".parquet":
        base = base.parent
    candidate = Path(relative)
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


_REASON_OF_STATUS = object()  # mark_rows' default: the reason code named like the status


def mark_rows(
    table: pa.Table,
    mask: pa.Array | pa.ChunkedArray | np.ndarray,
    status: str,
    *,
    reason: Any = _REASON_OF_STATUS,
    detail: str | pa.Array | pa.ChunkedArray | None = None,
    **columns: Any,
) -> pa.Table:
    """Give the rows where ``mask`` holds ``status``, ``reason`` (by default the code named like the
    status), ``detail`` and any other ``columns``; each value is a scalar or a column as long as the table.
    Other rows keep their values. The one way the table steps (score cut, dedup, rebalance) mark rows."""
    if reason is _REASON_OF_STATUS:
        reason = status
    mask = pc.fill_null(pa.array(mask) if isinstance(mask, np.ndarray) else mask, False)
    if not pc.any(mask).as_py():
        return table
    for name, value in {"status": status, "reason": reason, "detail": detail, **columns}.items():
        i = table.schema.get_field_index(name)
        field = SCHEMA.field(name) if name in SCHEMA.names else table.schema.field(i)
        if not isinstance(value, (pa.Array, pa.ChunkedArray)):
            value = pa.scalar(value, field.type)
        column = pc.if_else(mask, value.cast(field.type), table.column(i).cast(field.type))
        table = table.set_column(i, field, column)
    return table
