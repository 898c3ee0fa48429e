"""A Kinetics copy: files named ``{youtube_id}_{start:06d}_{end:06d}.mp4``, flat or in label folders, in a
local directory or under a URI prefix (``s3://bucket/kinetics``, read through :mod:`videonet_curate.uri`).

Indexed once with one directory walk or one listing (a dict from clip id to path or URI), never a stat per
row: a 30,000-row annotation file against a mirror holding ten clips must resolve in well under a second.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from videonet_curate.uri import is_uri, join, list_files

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")


def _walk(root: str | os.PathLike[str]) -> Iterator[tuple[str, Path | str]]:
    """(file name, path) of every file under a local ``root``, hidden directories skipped; a directory's
    files (sorted) before its subdirectories (sorted)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield name, Path(dirpath) / name


def _list(root: str) -> Iterator[tuple[str, str]]:
    """(object name, URI) of every object under the prefix ``root``, in the order of :func:`_walk` (so
    the same copy indexes the same way on a disk and in a bucket), hidden "directories" skipped."""
    parts = [rel.split("/") for rel in list_files(root)]
    for rel in sorted(parts, key=lambda p: (p[:-1], p[-1])):
        if not any(part.startswith(".") for part in rel[:-1]):
            yield rel[-1], join(root, *rel)


def index_mirror(root: str | os.PathLike[str]) -> dict[str, Path | str]:
    """Map each clip id (file stem) under ``root`` to its path (a URI under a URI ``root``); the first of
    duplicate stems wins. A URI that cannot be listed raises :class:`~videonet_curate.uri.StorageError`."""
    index: dict[str, Path | str] = {}
    duplicates = 0
    for name, path in _list(str(root)) if is_uri(root) else _walk(root):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in VIDEO_SUFFIXES or name.startswith("."):
            continue
        if stem in index:
            duplicates += 1
            continue
        index[stem] = path
    if duplicates:
        log.warning("mirror %s: %d clip ids appear more than once; using the first of each", root, duplicates)
    log.info("mirror %s: %d clips indexed", root, len(index))
    return index
