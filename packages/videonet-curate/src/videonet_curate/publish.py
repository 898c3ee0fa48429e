"""Publishing a curated manifest as a dataset directory, and verifying one.

``publish(OUT, DIR)`` writes ``DIR/manifest.parquet`` (and ``embeddings.parquet`` on request), the report
plots under ``DIR/plots/``, a dataset card ``DIR/README.md`` with Hugging-Face-style YAML front matter, and
``DIR/checksums.sha256`` in ``sha256sum`` format (``sha256sum -c checksums.sha256`` checks it too). The
directory is assembled under a temporary name and renamed into place, so a half-published directory is
never visible. ``verify_published(DIR)`` checks every checksum, that no file was added or removed, and the
manifest (and embeddings) schema; it raises :class:`PublishedDatasetError` naming the offending file.

Both ends may be URIs (``s3://bucket/dataset``, see uri.py). Object stores have no directory rename:
the dataset is assembled and verified locally, then uploaded file by file with ``checksums.sha256``
last (and, on ``--overwrite``, the old checksums removed first), so a prefix that verifies is always a
whole dataset. Verifying a URI downloads the (small: no videos) dataset to a temporary directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from videonet_curate import report
from videonet_curate.card import CHECKSUMS_FILENAME, PLOTS_DIRNAME, render_card
from videonet_curate.embeddings import EMBEDDINGS_FILENAME, read_embeddings
from videonet_curate.manifest import (
    MANIFEST_FILENAME,
    SCHEMA,
    ManifestError,
    atomic_write_table,
    read_manifest,
    read_metadata,
)
from videonet_curate.safepath import contained, is_inside
from videonet_curate.storage import file_sha256
from videonet_curate.uri import (
    StorageOptions,
    download_file,
    is_uri,
    join,
    list_files,
    location,
    remove,
    upload_file,
)

log = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class PublishError(RuntimeError):
    """Publishing could not be done (no manifest, destination not empty)."""


class PublishedDatasetError(ValueError):
    """A published dataset directory that does not verify; ``path`` names the offending file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = path if is_uri(path) else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class PublishResult:
    directory: Path | str  # a URI when published to object storage
    files: list[str]
    kept: int
    rows: int
    sizes: dict[str, int]  # bytes per file


def _relative_files(directory: Path) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink()
    )


def write_checksums(directory: Path) -> Path:
    """``checksums.sha256`` over every other file of ``directory`` (sorted, POSIX relative paths)."""
    lines = [
        f"{file_sha256(directory / name)}  {name}\n"
        for name in _relative_files(directory)
        if name != CHECKSUMS_FILENAME
    ]
    path = directory / CHECKSUMS_FILENAME
    path.write_text("".join(lines), encoding="utf-8")
    return path


def publish(
    out_dir: str | os.PathLike[str],
    to_dir: str | os.PathLike[str],
    *,
    with_embeddings: bool = False,
    overwrite: bool = False,
    title: str = "VideoNet clips",
    options: StorageOptions | None = None,
) -> PublishResult:
    """Publish the manifest in ``out_dir`` as a self-describing, checksummed directory ``to_dir``
    (either may be a URI, ``file:///abs/dir`` being a local path; ``options`` say how to reach object
    storage)."""
    out_dir, to_dir = location(out_dir), location(to_dir)  # file:// would become a directory "file:"
    with tempfile.TemporaryDirectory(prefix="videonet-publish-") as scratch:
        manifest_path, build_dir = _local_manifest(out_dir, Path(scratch), with_embeddings, options)
        if is_uri(to_dir) or is_uri(out_dir):
            overlap = _uri_overlap(str(to_dir), str(build_dir))
        else:
            overlap = _overlap(Path(to_dir), Path(build_dir))
        if overlap:
            raise PublishError(
                f"--to {to_dir} {overlap} the build {build_dir}; publishing (or --overwrite) there would "
                "delete or mix in the build: pass a --to that neither is, holds, nor lies inside the build"
            )
        if is_uri(to_dir):
            return _publish_to_uri(
                manifest_path, str(to_dir), Path(scratch), options, with_embeddings, overwrite, title
            )
        return _publish_to_directory(manifest_path, Path(to_dir), with_embeddings, overwrite, title)


def _local_manifest(
    out_dir: str | os.PathLike[str], scratch: Path, with_embeddings: bool, options: StorageOptions | None
) -> tuple[Path, str | Path]:
    """(a local manifest.parquet, the build directory): a build on object storage is downloaded (its
    manifest, and embeddings when asked; never the clips) into ``scratch``."""
    if not is_uri(out_dir):
        out_dir = Path(out_dir)
        manifest_path = out_dir / MANIFEST_FILENAME if out_dir.is_dir() else out_dir
        read_manifest(manifest_path)  # refuses a manifest that breaks the contract
        embeddings_path = manifest_path.parent / EMBEDDINGS_FILENAME
        if with_embeddings and not embeddings_path.exists():
            raise PublishError(f"--with-embeddings given but {embeddings_path} does not exist")
        return manifest_path, manifest_path.parent
    uri = str(out_dir).rstrip("/")
    manifest_uri = uri if uri.endswith(".parquet") else join(uri, MANIFEST_FILENAME)
    build_uri = manifest_uri.rsplit("/", 1)[0]
    local = scratch / "build"
    local.mkdir()
    try:
        download_file(manifest_uri, local / MANIFEST_FILENAME, options)
    except FileNotFoundError:
        raise ManifestError(f"{manifest_uri} does not exist: pass the --out of a finished build") from None
    if with_embeddings:
        try:
            download_file(join(build_uri, EMBEDDINGS_FILENAME), local / EMBEDDINGS_FILENAME, options)
        except FileNotFoundError:
            raise PublishError(
                f"--with-embeddings given but {join(build_uri, EMBEDDINGS_FILENAME)} does not exist"
            ) from None
    read_manifest(local / MANIFEST_FILENAME)
    return local / MANIFEST_FILENAME, build_uri


def _assemble(manifest_path: Path, staging: Path, with_embeddings: bool, title: str) -> tuple[Any, dict]:
    """Write the whole dataset into the (empty) local directory ``staging``; returns (table, summary)."""
    table = read_manifest(manifest_path)
    metadata = read_metadata(manifest_path)
    metadata["config"] = portable_config(metadata.get("config") or {})
    write_portable_manifest(manifest_path, staging / MANIFEST_FILENAME, metadata["config"])
    if with_embeddings:
        shutil.copyfile(manifest_path.parent / EMBEDDINGS_FILENAME, staging / EMBEDDINGS_FILENAME)
    paths = report.write_report(manifest_path, report_dir=staging / PLOTS_DIRNAME)
    summary = json.loads(paths.summary.read_text())
    paths.html.unlink()  # the card replaces the HTML page; the plots and summary stay
    (staging / CARD_FILENAME).write_text(
        render_card(table, metadata, summary, paths.plots, with_embeddings, title), encoding="utf-8"
    )
    write_checksums(staging)
    return table, summary


def _publish_to_directory(
    manifest_path: Path, to_dir: Path, with_embeddings: bool, overwrite: bool, title: str
) -> PublishResult:
    if to_dir.exists() and not to_dir.is_dir():
        raise PublishError(f"--to {to_dir} is a file; pass a directory (new or empty)")
    if to_dir.exists() and any(to_dir.iterdir()) and not overwrite:
        raise PublishError(f"{to_dir} exists and is not empty: choose a new directory or pass --overwrite")
    to_dir.parent.mkdir(parents=True, exist_ok=True)
    # not mkdtemp (always 0700): the published directory, renamed from this one, follows the umask
    staging = to_dir.parent / f".{to_dir.name}.{secrets.token_hex(6)}.publishing"
    staging.mkdir(mode=0o777)
    try:
        table, summary = _assemble(manifest_path, staging, with_embeddings, title)
        if to_dir.exists():
            shutil.rmtree(contained(to_dir.parent, to_dir))
        os.replace(staging, to_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    verify_published(to_dir)
    files = _relative_files(to_dir)
    sizes = {name: (to_dir / name).stat().st_size for name in files}
    return PublishResult(to_dir, files, int(summary["kept"]), table.num_rows, sizes)


def _publish_to_uri(
    manifest_path: Path,
    to_uri: str,
    scratch: Path,
    options: StorageOptions | None,
    with_embeddings: bool,
    overwrite: bool,
    title: str,
) -> PublishResult:
    existing = list_files(to_uri, options)
    if existing and not overwrite:
        raise PublishError(f"{to_uri} exists and is not empty: choose a new prefix or pass --overwrite")
    staging = scratch / "dataset"
    staging.mkdir()
    table, summary = _assemble(manifest_path, staging, with_embeddings, title)
    verify_published(staging)  # checked before anything is uploaded
    files = _relative_files(staging)
    # checksums.sha256 is the dataset's done-marker: removed first, uploaded last, so a prefix that
    # verifies never mixes an old and a new dataset
    remove(join(to_uri, CHECKSUMS_FILENAME), options)
    for name in files:
        if name != CHECKSUMS_FILENAME:
            upload_file(staging / name, join(to_uri, name), options)
    for name in sorted(set(existing) - set(files)):
        remove(join(to_uri, name), options)
    upload_file(staging / CHECKSUMS_FILENAME, join(to_uri, CHECKSUMS_FILENAME), options)
    verify_published(to_uri, options)
    sizes = {name: (staging / name).stat().st_size for name in files}
    return PublishResult(to_uri, files, int(summary["kept"]), table.num_rows, sizes)


def _uri_overlap(to_uri: str, build_uri: str) -> str | None:
    """As :func:`_overlap`, for URIs (prefixes compared by path segments)."""
    to_parts, build_parts = to_uri.rstrip("/").split("/"), build_uri.rstrip("/").split("/")
    if to_parts == build_parts:
        return "is"
    if build_parts[: len(to_parts)] == to_parts:
        return "holds"
    if to_parts[: len(build_parts)] == build_parts:
        return "lies inside"
    return None


def portable_config(value: Any, key: str = "") -> Any:
    """The build config without the builder's file system: absolute paths become their last part.

    A published dataset travels to other people; ``/home/alice/secret-project/annotations.csv`` (or where
    her ``--cookies`` file lies) is none of their business and useless on their machine.
    """
    if isinstance(value, dict):
        return {k: portable_config(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_config(v, key) for v in value]
    if key == "cookies" and value:
        return "(given)"
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return value


def write_portable_manifest(source: Path, dest: Path, config: dict[str, Any]) -> None:
    """Copy the manifest with :func:`portable_config` in its metadata; rows with an absolute path refused."""
    table = pq.read_table(source)
    absolute = [p for p in table.column("path").to_pylist() if p and os.path.isabs(p)]
    if absolute:
        raise PublishError(
            f"{source} holds absolute clip paths (e.g. {absolute[0]}); a published dataset carries paths "
            "relative to the manifest only: rebuild with this version"
        )
    metadata = dict(table.schema.metadata or {})
    metadata[b"videonet.config"] = json.dumps(config, sort_keys=True, default=str).encode()
    atomic_write_table(table.replace_schema_metadata(metadata), dest)


def _overlap(to_dir: Path, build_dir: Path) -> str | None:
    """How ``to_dir`` overlaps the build directory, in words; None when they are disjoint."""
    if is_inside(to_dir, build_dir) and is_inside(build_dir, to_dir):
        return "is"
    if is_inside(build_dir, to_dir):
        return "holds"
    if is_inside(to_dir, build_dir):
        return "lies inside"
    return None


def read_checksums(directory: Path) -> dict[str, str]:
    """``checksums.sha256`` parsed to {relative path: hex digest}; raises on any malformed line."""
    path = directory / CHECKSUMS_FILENAME
    if not path.is_file():
        raise PublishedDatasetError(
            path, "missing: this is not a published dataset (run `videonet-curate publish`)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PublishedDatasetError(path, f"not UTF-8 text ({exc})") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _CHECKSUM_LINE.match(line)
        if not match:
            raise PublishedDatasetError(path, f"line {number} is not '<sha256>  <file>': {line!r}")
        digest, name = match.groups()
        if name in entries or name.startswith("/") or ".." in Path(name).parts:
            raise PublishedDatasetError(path, f"line {number} names {name!r} twice or outside the directory")
        entries[name] = digest
    if not text.endswith("\n") and text:
        raise PublishedDatasetError(path, "truncated (no final newline)")
    return entries


def verify_published(directory: str | os.PathLike[str], options: StorageOptions | None = None) -> None:
    """Raise :class:`PublishedDatasetError` unless ``directory`` is exactly what ``publish`` wrote.

    Checks: every listed file exists and matches its SHA-256, no unlisted file is present, the manifest
    reads and validates against the v1 schema, and the embeddings (when present) have the published layout
    and only clip_ids of the manifest. A URI is downloaded to a temporary directory and checked there.
    """
    if is_uri(directory):
        _verify_uri(str(directory).rstrip("/"), options)
        return
    directory = Path(location(directory))  # a plain path, or file:///abs/dir
    if not directory.is_dir():
        raise PublishedDatasetError(directory, "not a directory")
    entries = read_checksums(directory)
    for name, digest in entries.items():
        path = directory / name
        if not is_inside(path, directory):
            raise PublishedDatasetError(path, "checksums.sha256 lists a path outside the dataset")
        if not path.is_file():
            raise PublishedDatasetError(path, "listed in checksums.sha256 but missing")
        if file_sha256(path) != digest:
            raise PublishedDatasetError(path, "SHA-256 does not match checksums.sha256: the file was changed")
    unlisted = [n for n in _relative_files(directory) if n != CHECKSUMS_FILENAME and n not in entries]
    if unlisted:
        raise PublishedDatasetError(
            directory / unlisted[0], "not listed in checksums.sha256 (added after publishing)"
        )
    for required in (MANIFEST_FILENAME, CARD_FILENAME):
        if required not in entries:
            raise PublishedDatasetError(directory / required, "missing from the published dataset")
    manifest_path = directory / MANIFEST_FILENAME
    try:
        table = read_manifest(manifest_path)
    except ManifestError as exc:
        raise PublishedDatasetError(manifest_path, f"manifest does not honour the schema: {exc}") from None
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise PublishedDatasetError(manifest_path, f"lacks schema columns {missing}")
    if EMBEDDINGS_FILENAME in entries:
        _verify_embeddings(directory / EMBEDDINGS_FILENAME, set(table.column("clip_id").to_pylist()))


def _verify_embeddings(path: Path, clip_ids: set[str]) -> None:
    try:
        embeddings = read_embeddings(path)
    except (OSError, ValueError, KeyError) as exc:
        raise PublishedDatasetError(path, f"not a readable embeddings table: {exc}") from None
    unknown = set(embeddings.column("clip_id").to_pylist()) - clip_ids
    if unknown:
        raise PublishedDatasetError(
            path, f"{len(unknown)} clip_ids are not in the manifest, e.g. {sorted(unknown)[:3]}"
        )


def _verify_uri(uri: str, options: StorageOptions | None) -> None:
    names = list_files(uri, options)
    if not names:
        raise PublishedDatasetError(uri, "no such dataset (nothing under this prefix)")
    with tempfile.TemporaryDirectory(prefix="videonet-verify-") as scratch:
        local = Path(scratch) / "dataset"
        for name in names:
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            download_file(join(uri, name), local / name, options)
        try:
            verify_published(local)
        except PublishedDatasetError as exc:  # name the object, not our temporary copy
            relative = Path(exc.path).relative_to(local).as_posix() if is_inside(exc.path, local) else ""
            raise PublishedDatasetError(
                join(uri, relative) if relative != "." else uri, exc.problem
            ) from None
