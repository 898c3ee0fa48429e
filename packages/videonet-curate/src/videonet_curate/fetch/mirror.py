"""A local Kinetics copy: files named ``{youtube_id}_{start:06d}_{end:06d}.mp4``, flat or in label folders.

Indexed once with one directory walk (a dict from clip id to path), never a stat per row: a 30,000-row
annotation file against a mirror holding ten clips must resolve in well under a second.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")


def index_mirror(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Map each clip id (file stem) under ``root`` to its path; the first of duplicate stems wins."""
    index: dict[str, Path] = {}
    duplicates = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_SUFFIXES or name.startswith("."):
                continue
            if stem in index:
                duplicates += 1
                continue
            index[stem] = Path(dirpath) / name
    if duplicates:
        log.warning("mirror %s: %d clip ids appear more than once; using the first of each", root, duplicates)
    log.info("mirror %s: %d clips indexed", root, len(index))
    return index
