"""On-disk cache of class prototypes, so CLIP text prototypes are built once per model and prompt set.

Building them costs minutes on a CPU (1000 classes x 80 prompts through a text tower). A cache entry is
keyed by everything that determines its values: the model id (architecture + weights identity), the
template set and the exact prompt texts, the class names and the class subset. Entries are written to a
temporary name in the same directory and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from videonet_curate.storage import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "videonet-curate" / "prototypes"
_TENSOR = "prototypes"


def default_cache_dir() -> Path:
    """``$VIDEONET_PROTOTYPE_CACHE`` or ``~/.cache/videonet-curate/prototypes``."""
    return Path(os.environ.get("VIDEONET_PROTOTYPE_CACHE", DEFAULT_CACHE_DIR))


def cache_key(identity: Mapping[str, Any]) -> str:
    """A stable hex key of a JSON-serialisable identity (sorted keys)."""
    blob = json.dumps(dict(identity), sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_path(cache_dir: Path, identity: Mapping[str, Any]) -> Path:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{identity.get('model_id', 'model')}")[:80]
    return cache_dir / f"{readable}-{cache_key(identity)}.safetensors"


def _atomic_save(tensor: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # honours the umask: the cache is meant to be shared
        save_file({_TENSOR: tensor.detach().float().cpu().contiguous()}, str(tmp), metadata=metadata)


def load_or_build(
    identity: Mapping[str, Any],
    build: Callable[[], torch.Tensor],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_shape: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, Path]:
    """The cached prototypes for ``identity``, or ``build()`` them and cache them. Returns (tensor, path).

    An unreadable or wrongly shaped entry is rebuilt (and overwritten), not trusted.
    """
    path = cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), identity)
    if path.is_file():
        try:
            tensor = load_file(path)[_TENSOR]
            if expected_shape is None or tuple(tensor.shape) == tuple(expected_shape):
                logger.info("prototypes: cache hit %s", path)
                return tensor, path
            logger.warning(
                "prototypes: %s has shape %s, expected %s; rebuilding",
                path,
                tuple(tensor.shape),
                expected_shape,
            )
        except (SafetensorError, KeyError, OSError) as exc:
            logger.warning("prototypes: unreadable cache entry %s (%s); rebuilding", path, exc)
    tensor = build()
    metadata = {"identity": json.dumps(dict(identity), sort_keys=True, default=str)}
    try:
        _atomic_save(tensor, path, metadata)
        logger.info("prototypes: cached %s", path)
    except OSError as exc:  # a read-only cache must not stop scoring
        logger.warning("prototypes: could not write cache %s (%s)", path, exc)
    return tensor, path
