"""The network sources of `videonet-curate build` (``--source kinetics`` and ``--source urls``).

Glue between the CLI's options, the candidate readers, the driver-side triage (:func:`plan_fetch`) and
the per-clip :func:`materialize` the pipeline runs on its workers. Also ``--retry-failed``: a run that
re-fetches only the rows of an existing manifest that failed for transient reasons.
"""

from __future__ import annotations

import logging
import os
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from videonet_curate import manifest as mf
from videonet_curate.embeddings import EMBEDDINGS_FILENAME, read_embeddings
from videonet_curate.fetch.materialize import materialize
from videonet_curate.fetch.options import FetchConfigError, FetchOptions, parse_ytdlp_options
from videonet_curate.fetch.plan import plan_fetch
from videonet_curate.fetch.ratelimit import RayLimiterClient, start_limiter_actor
from videonet_curate.safepath import is_inside

log = logging.getLogger(__name__)

CLIPS_DIRNAME = "clips"  # downloaded clips live in OUT/clips/{clip_id}.mp4

# FetchOptions fields that change what a clip's bytes are: they go into the shard fingerprint, so
# changing them re-does the shards. Politeness, retries and timeouts do not.
CONTENT_FIELDS = (
    "mirror_dir",
    "url_template",
    "min_height",
    "max_fps",
    "short_side",
    "crf",
    "preset",
    "min_clip_seconds",
)


class SourceInputError(ValueError):
    """Bad source arguments (exit code 2): the message names the option and the fix."""


def fetch_options_from(source_options: Mapping[str, Any]) -> FetchOptions:
    """Build :class:`FetchOptions` from the CLI's ``source_options`` (unknown keys are ignored)."""
    known = {f.name for f in fields(FetchOptions)}
    values = {k: v for k, v in source_options.items() if k in known and v is not None}
    for key in ("mirror_dir", "cookies"):
        if key in values:
            values[key] = Path(values[key])
    try:
        values["ytdlp_options"] = parse_ytdlp_options(source_options.get("ytdlp_opt") or ())
        return FetchOptions(**values)
    except FetchConfigError as exc:
        raise SourceInputError(str(exc)) from exc


def fingerprint_fields(opts: FetchOptions) -> dict[str, Any]:
    return {name: str(getattr(opts, name)) for name in CONTENT_FIELDS}


@dataclass(frozen=True)
class Materializer:
    """The pipeline's ``materialize(candidate, out_dir)``: picklable, so it travels to Ray workers.

    ``limiter_actor`` is the handle of the run's shared rate limiter (None: one limiter per process);
    holding the handle here also keeps the actor alive for as long as any worker may need it.
    """

    opts: FetchOptions
    limiter_actor: Any = None

    def __call__(self, candidate: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
        limiter = RayLimiterClient(self.limiter_actor) if self.limiter_actor is not None else None
        return materialize(candidate, self.opts, Path(out_dir) / CLIPS_DIRNAME, limiter=limiter).as_row()


@dataclass
class RemoteSource:
    """What `build` needs from a network source."""

    candidates: list[dict[str, Any]]  # for the workers
    final_rows: list[dict[str, Any]]  # settled on the driver, or carried over by --retry-failed
    materialize: Materializer
    stats: dict[str, Any]


def read_source_candidates(
    source: str, source_options: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Candidate rows and reading statistics for ``--source kinetics|urls``."""
    if source == "kinetics":
        from videonet_curate.sources.kinetics import KineticsFormatError, read_kinetics_annotations

        csv_path = source_options.get("annotations")
        if not csv_path:
            raise SourceInputError(
                "--source kinetics needs --annotations FILE.csv (an official Kinetics CSV)"
            )
        classes = source_options.get("classes")
        try:
            candidates, stats = read_kinetics_annotations(
                csv_path,
                split=source_options.get("split"),
                classes=classes,
                limit=source_options.get("limit"),
            )
        except KineticsFormatError as exc:
            raise SourceInputError(str(exc)) from exc
        return candidates, stats.as_dict()
    if source == "urls":
        from videonet_curate.sources.urls import UrlListError, read_url_list

        path = source_options.get("input")
        if not path:
            raise SourceInputError(
                "--source urls needs --input FILE (.txt, .csv or .parquet with a url column)"
            )
        try:
            candidates = read_url_list(path)
        except UrlListError as exc:
            raise SourceInputError(str(exc)) from exc
        limit = source_options.get("limit")
        return (candidates[:limit] if limit else candidates), {"listed": len(candidates)}
    raise SourceInputError(f"unknown network source {source!r}; expected kinetics or urls")


TEMPLATE_FIELDS = ("youtube_id", "clip_id", "start", "end")


def check_url_template(template: str) -> None:
    """Refuse a --url-template with unknown fields, broken braces, or that gives no http(s) URL."""
    try:
        fields_used = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = sorted({name for name in fields_used if name not in TEMPLATE_FIELDS})
        if unknown:
            raise SourceInputError(
                f"--url-template {template!r}: unknown fields {unknown}; use {{youtube_id}}, {{clip_id}}, "
                "{start} or {end}"
            )
        example = template.format(
            youtube_id="dQw4w9WgXcQ", clip_id="dQw4w9WgXcQ_000001_000011", start=1, end=11
        )
    except (ValueError, IndexError, KeyError) as exc:
        raise SourceInputError(
            f"--url-template {template!r}: {exc}; write fields as {{youtube_id}} "
            "(double braces for a literal brace)"
        ) from None
    from videonet_curate.sources.urls import UrlListError, check_url

    try:
        check_url(example, f"--url-template {template!r} gives")
    except UrlListError as exc:
        raise SourceInputError(str(exc)) from None


def check_remote_arguments(
    source: str, source_options: Mapping[str, Any], *, out_dir: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Everything checkable before anything is written (raises :class:`SourceInputError`).

    Reads and validates the whole source (CSV encoding and columns, URL syntax, at least one usable row)
    and returns its (candidates, stats), or None for ``--retry-failed``, whose rows come from the manifest.
    """
    opts = fetch_options_from(source_options)
    if opts.url_template:
        check_url_template(opts.url_template)
    if source == "urls" and opts.mirror_dir is not None:
        raise SourceInputError("--mirror is for --source kinetics; a URL list is always downloaded")
    if opts.mirror_dir is not None and out_dir is not None and is_inside(out_dir, opts.mirror_dir):
        raise SourceInputError(
            f"--out {out_dir} lies inside --mirror {opts.mirror_dir}: the next build would index its own "
            "clips as mirror files; pass an --out outside the mirror"
        )
    if source == "kinetics":
        path = source_options.get("annotations")
        if not path or not Path(path).is_file():
            raise SourceInputError(
                f"--annotations {path}: no such file; pass an official Kinetics CSV such as "
                "kinetics-600_val.csv"
            )
    elif source == "urls":
        path = source_options.get("input")
        if not path or not Path(path).is_file():
            raise SourceInputError(
                f"--input {path}: no such file; pass a .txt, .csv or .parquet list of URLs"
            )
    reasons = source_options.get("retry_failed")
    if reasons:
        manifest_path = (out_dir or Path(".")) / mf.MANIFEST_FILENAME
        if not manifest_path.is_file():
            raise SourceInputError(
                f"--retry-failed needs an existing {manifest_path}; run the build once first"
            )
        unknown = sorted(set(reasons) - set(mf.REASONS))
        if unknown:
            raise SourceInputError(
                f"--retry-reasons {unknown}: not reason codes; choose from {sorted(mf.REASONS)}"
            )
        return None
    return read_source_candidates(source, source_options)


def retry_candidates(
    out_dir: Path, reasons: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From OUT/manifest.parquet: (candidates to fetch again, rows carried over unchanged)."""
    manifest_path = out_dir / mf.MANIFEST_FILENAME
    if not manifest_path.exists():
        raise SourceInputError(f"--retry-failed needs an existing {manifest_path}; run the build once first")
    unknown = sorted(set(reasons) - set(mf.REASONS))
    if unknown:
        raise SourceInputError(
            f"--retry-failed {unknown}: not reason codes; choose from {sorted(mf.REASONS)}"
        )
    table = mf.read_manifest(manifest_path)
    retry, carried = [], []
    for row in table.to_pylist():
        if row["status"] == mf.STATUS_FAILED and row["reason"] in reasons:
            start = row.get("source_start_s")
            end = row.get("source_end_s")
            retry.append(
                {
                    "clip_id": row["clip_id"],
                    "source": row["source"],
                    "source_id": row["source_id"],
                    "url": row["source_id"] if row["source"] == "urls" else None,
                    "start_s": start,
                    "end_s": end,
                    "source_label": row.get("source_label"),
                }
            )
        else:
            carried.append({k: v for k, v in row.items() if k in mf.SCHEMA.names})
    return retry, carried


def carry_embeddings(out_dir: Path, new: pa.Table, rows: pa.Table) -> pa.Table:
    """--retry-failed: the new embeddings plus the old ones of rows carried over from the manifest."""
    path = out_dir / EMBEDDINGS_FILENAME
    if not path.exists():
        return new
    old = read_embeddings(path)
    fresh = set(new.column("clip_id").to_pylist())
    wanted = set(rows.column("clip_id").to_pylist()) - fresh
    keep = [i for i, cid in enumerate(old.column("clip_id").to_pylist()) if cid in wanted]
    if not keep:
        return new
    old = old.take(pa.array(keep, pa.int64()))
    if new.num_rows == 0:
        return old
    return pa.concat_tables([new, old.cast(new.schema)]).sort_by("clip_id")


def run_settings(source: str, source_options: Mapping[str, Any]) -> dict[str, Any]:
    """What of a network source decides the shards' output (for the run fingerprint)."""
    opts = fetch_options_from(source_options)
    settings: dict[str, Any] = {"fetch": fingerprint_fields(opts)}
    if source_options.get("retry_failed"):
        settings["retry_failed"] = sorted(source_options["retry_failed"])
    return settings


def gather_remote(
    source: str,
    source_options: Mapping[str, Any],
    *,
    use_ray: bool,
    out_dir: Path | None = None,
    pre_read: tuple[list[dict[str, Any]], dict[str, Any]] | None = None,
) -> RemoteSource:
    """Read (or, with ``retry_failed``, take from the manifest) the candidates and triage them."""
    opts = fetch_options_from(source_options)
    reasons = source_options.get("retry_failed")
    carried: list[dict[str, Any]] = []
    if reasons:
        if out_dir is None:
            raise SourceInputError("--retry-failed needs --out of an earlier run")
        candidates, carried = retry_candidates(out_dir, reasons)
        stats: dict[str, Any] = {"retrying": len(candidates), "carried_over": len(carried)}
    else:
        candidates, stats = pre_read or read_source_candidates(source, source_options)
        stats = dict(stats)
    plan = plan_fetch(candidates, opts)
    stats.update(plan.stats)
    actor = None
    if use_ray and opts.mirror_dir is None and plan.to_fetch:
        # one limiter for every worker of this run: the politeness limits are global, not per worker
        actor = start_limiter_actor(
            f"videonet-fetch-limiter-{uuid.uuid4().hex[:8]}", opts.max_rps, opts.max_concurrent
        )
    return RemoteSource(plan.to_fetch, plan.settled + carried, Materializer(opts, actor), stats)
