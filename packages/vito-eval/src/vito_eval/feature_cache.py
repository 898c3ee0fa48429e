"""The one on-disk feature cache of vito-eval (probe image features, UCF-101 clip features).

An entry is ``<key>.npz`` in the cache folder holding ``features`` (N, D), ``labels`` (N,) and ``meta`` (a
JSON dict: extraction seconds, failed clips, ...). The key is the sha256 of a JSON dict of everything the
features depend on, which each caller spells out (`cache_key`). Entries are written to a temporary name
in the same folder and renamed, so a partial file is never seen; a damaged entry reads as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate.storage import atomic_open

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("VITO_EVAL_CACHE", Path.home() / ".cache" / "vito-eval" / "features"))


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of ``parts`` (JSON, sorted keys) plus the cache format."""
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    features: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureCache:
    """A cache folder; ``directory=None`` is a cache that never hits and stores nothing."""

    directory: Path | None = DEFAULT_CACHE_DIR

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else Path(self.directory) / f"{key}.npz"

    def load(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None when absent or unreadable (logged)."""
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return CacheEntry(data["features"], data["labels"], json.loads(str(data["meta"])))
        except (OSError, ValueError, KeyError) as exc:  # a damaged entry is recomputed, not fatal
            log.warning("ignoring unreadable feature cache entry %s: %s", path, exc)
            return None

    def store(self, key: str, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
        """Write the entry atomically (temporary file in the cache folder, then rename)."""
        path = self.path(key)
        if path is None:
            return
        with atomic_open(path, "wb") as f:
            np.savez(f, features=features, labels=labels, meta=np.array(json.dumps(meta)))
