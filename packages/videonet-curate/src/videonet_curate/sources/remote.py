"""What the network sources of `build` (``--source kinetics`` and ``--source urls``) share.

A :class:`RemoteSource` reads its candidate list on the driver (once, in :meth:`~RemoteSource.check`),
triages it there (:func:`~videonet_curate.fetch.plan.plan_fetch`: mirror lookup, host preflight), and
hands the workers a picklable :class:`Materializer` that downloads and normalises one clip. Also
``--retry-failed``: a run that re-fetches only the rows of an existing manifest that failed for
transient reasons and carries every other row (and its embedding) over.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import string
import uuid
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from videonet_curate import manifest as mf
from videonet_curate.embeddings import EMBEDDINGS_FILENAME, read_embeddings
from videonet_curate.fetch.materialize import materialize
from videonet_curate.fetch.options import FetchConfigError, FetchOptions
from videonet_curate.fetch.plan import plan_fetch
from videonet_curate.fetch.ratelimit import RayLimiterClient, start_limiter_actor
from videonet_curate.safepath import http_url_problem, is_inside
from videonet_curate.sources.base import Gathered, Source, SourceArgs, SourceInputError
from videonet_curate.uri import (
    StorageError,
    download_file,
    exists,
    is_file,
    is_under,
    is_uri,
    join,
    upload_file,
)

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

TEMPLATE_FIELDS = ("youtube_id", "clip_id", "start", "end")


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
        if is_uri(out_dir):
            return materialize_to_uri(candidate, self.opts, join(out_dir, CLIPS_DIRNAME), limiter)
        return materialize(candidate, self.opts, Path(out_dir) / CLIPS_DIRNAME, limiter=limiter).as_row()


def materialize_to_uri(
    candidate: Mapping[str, Any], opts: FetchOptions, clips_uri: str, limiter: Any = None
) -> dict[str, Any]:
    """:func:`materialize` for an OUT in object storage: the clip is made in a local staging directory
    (a clip already at ``clips_uri`` from an earlier run is staged from there and checked like a local
    one), then uploaded in one PUT, so its key appears complete or not at all. The row's path is the URI
    (a mirror's file stays where it is: its local path or its URI)."""
    import shutil
    import tempfile

    from videonet_curate.fetch.materialize import clip_filename
    from videonet_curate.safepath import is_safe_name

    staging = Path(tempfile.mkdtemp(prefix="videonet-clip-"))
    try:
        final_uri = None
        if opts.mirror_dir is None and is_safe_name(str(candidate.get("clip_id"))):
            final_uri = join(clips_uri, clip_filename(str(candidate["clip_id"])))
            if is_file(final_uri):  # finished before a crash: materialize decodes it again to keep it
                download_file(final_uri, staging / clip_filename(str(candidate["clip_id"])))
        row = materialize(candidate, opts, staging, limiter=limiter).as_row()
        if final_uri is not None and row.get("path") is not None:
            upload_file(row["path"], final_uri)
            row["path"] = final_uri
        return row
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_url_template(template: str) -> None:
    """Refuse a --url-template with unknown fields, broken braces, or that gives no http(s) URL."""
    try:
        fields_used = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = sorted({name for name in fields_used if name not in TEMPLATE_FIELDS})
        example = None
        if not unknown:
            example = template.format(
                youtube_id="dQw4w9WgXcQ", clip_id="dQw4w9WgXcQ_000001_000011", start=1, end=11
            )
    except (ValueError, IndexError, KeyError) as exc:
        raise SourceInputError(
            f"--url-template {template!r}: {exc}; write fields as {{youtube_id}} "
            "(double braces for a literal brace)"
        ) from None
    if unknown:
        raise SourceInputError(
            f"--url-template {template!r}: unknown fields {unknown}; use {{youtube_id}}, {{clip_id}}, "
            "{start} or {end}"
        )
    problem = http_url_problem(str(example))
    if problem:
        raise SourceInputError(f"--url-template {template!r} gives: {problem}")


def check_mirror(mirror: Path | str, out_dir: Path | str) -> None:
    """--mirror must not hold --out (the next build would index its own files as mirror files), and a
    URI prefix must hold something (one cheap request here; the listing itself is plan_fetch's)."""
    if is_uri(mirror) and is_uri(out_dir):
        inside = is_under(out_dir, mirror)
    else:
        inside = not is_uri(mirror) and not is_uri(out_dir) and is_inside(out_dir, mirror)
    if inside:
        raise SourceInputError(
            f"--out {out_dir} lies inside --mirror {mirror}: the next build would index its own "
            "clips as mirror files; pass an --out outside the mirror"
        )
    if is_uri(mirror):
        try:
            found = exists(mirror)
        except StorageError as exc:
            raise SourceInputError(f"--mirror {exc}") from None
        if not found:
            raise SourceInputError(
                f"--mirror {mirror} holds no objects (or its bucket cannot be reached); pass the prefix "
                "that holds the {youtube_id}_{start:06d}_{end:06d}.mp4 files, and --storage-option "
                "endpoint_url=... for a store other than AWS"
            )


def check_retry_reasons(out_dir: Path | str, reasons: Sequence[str]) -> Path | str:
    """The manifest ``--retry-failed`` works on, after checking that it exists and the reasons are codes."""
    manifest_path = (
        join(out_dir, mf.MANIFEST_FILENAME) if is_uri(out_dir) else Path(out_dir) / mf.MANIFEST_FILENAME
    )
    if not is_file(manifest_path):
        raise SourceInputError(f"--retry-failed needs an existing {manifest_path}; run the build once first")
    unknown = sorted(set(reasons) - set(mf.REASONS))
    if unknown:
        raise SourceInputError(
            f"--retry-reasons {unknown}: not reason codes; choose from {sorted(mf.REASONS)}"
        )
    return manifest_path


def retry_candidates(
    out_dir: Path | str, reasons: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From OUT/manifest.parquet: (candidates to fetch again, rows carried over unchanged)."""
    table = mf.read_manifest(check_retry_reasons(out_dir, reasons))
    retry, carried = [], []
    for row in table.to_pylist():
        if row["status"] == mf.STATUS_FAILED and row["reason"] in reasons:
            retry.append(
                {
                    "clip_id": row["clip_id"],
                    "source": row["source"],
                    "source_id": row["source_id"],
                    "url": row["source_id"] if row["source"] == "urls" else None,
                    "start_s": row.get("source_start_s"),
                    "end_s": row.get("source_end_s"),
                    "source_label": row.get("source_label"),
                }
            )
        else:
            carried.append({k: v for k, v in row.items() if k in mf.SCHEMA.names})
    return retry, carried


def carry_embeddings(out_dir: Path | str, new: pa.Table, rows: pa.Table) -> pa.Table:
    """--retry-failed: the new embeddings plus the old ones of rows carried over from the manifest."""
    path = join(out_dir, EMBEDDINGS_FILENAME) if is_uri(out_dir) else Path(out_dir) / EMBEDDINGS_FILENAME
    if not exists(path):
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


class RemoteSource(Source):
    """A source whose clips are downloaded (or taken from a mirror, local or a URI) by the workers."""

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        fetch = args.options.fetch
        if fetch.min_clip_seconds != args.min_clip_seconds:
            # one value for every source: --min-clip-seconds, which the CLI passes to the build
            try:
                fetch = dataclasses.replace(fetch, min_clip_seconds=args.min_clip_seconds)
            except FetchConfigError as exc:
                raise SourceInputError(str(exc)) from exc
        self.fetch = fetch
        self.retry_reasons = args.options.retry_failed
        self._read: tuple[list[dict[str, Any]], dict[str, Any]] | None = None

    # -- what each network source says --------------------------------------------------------------
    @abstractmethod
    def check_input(self) -> None:
        """Refuse a missing list file (the message names the option and the file)."""

    @abstractmethod
    def read_candidates(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Read and validate the whole list: (candidate rows, reading statistics)."""

    # -- the Source interface -----------------------------------------------------------------------
    def check(self) -> None:
        """The options, the list file, then the whole list (read here once), or the old manifest."""
        opts, out_dir = self.fetch, self.args.out_dir
        if opts.url_template:
            check_url_template(opts.url_template)
        if opts.mirror_dir is not None:
            check_mirror(opts.mirror_dir, out_dir)
        self.check_input()
        if self.retry_reasons:
            check_retry_reasons(out_dir, self.retry_reasons)  # the rows come from the manifest
            return
        self._read = self.read_candidates()

    def gather(self, *, use_ray: bool) -> Gathered:
        """Read (or, with --retry-failed, take from the manifest) the candidates and triage them."""
        carried: list[dict[str, Any]] = []
        if self.retry_reasons:
            candidates, carried = retry_candidates(self.args.out_dir, self.retry_reasons)
            stats: dict[str, Any] = {"retrying": len(candidates), "carried_over": len(carried)}
        else:
            candidates, stats = self._read or self.read_candidates()
            stats = dict(stats)
        plan = plan_fetch(candidates, self.fetch)
        stats.update(plan.stats)
        actor = None
        if use_ray and self.fetch.mirror_dir is None and plan.to_fetch:
            # one limiter for every worker of this run: the politeness limits are global, not per worker
            actor = start_limiter_actor(
                f"videonet-fetch-limiter-{uuid.uuid4().hex[:8]}",
                self.fetch.max_rps,
                self.fetch.max_concurrent,
            )
        return Gathered(plan.to_fetch, plan.settled + carried, Materializer(self.fetch, actor), stats)

    def run_settings(self) -> dict[str, Any]:
        """Adds the fetch options that change a clip's bytes, and the retried reasons."""
        settings = super().run_settings()
        settings["fetch"] = fingerprint_fields(self.fetch)
        if self.retry_reasons:
            settings["retry_failed"] = sorted(self.retry_reasons)
        return settings

    def after_labelling(self, embeddings: pa.Table, rows: pa.Table) -> pa.Table:
        if self.retry_reasons:  # rows carried over from the old manifest keep their old embeddings
            return carry_embeddings(self.args.out_dir, embeddings, rows)
        return embeddings
