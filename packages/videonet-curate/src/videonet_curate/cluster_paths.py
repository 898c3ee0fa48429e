"""Does every node of the Ray cluster see this local path? (``build --address`` with a local --out/--input)

Actors write shards and clips to OUT on their own node, and the driver merges them from OUT on its node;
a local path works only when it is one shared mount (NFS, a cluster filesystem) at the same path on every
node. The driver writes a marker holding a random token into OUT, and fingerprints the other local
directories (the sorted names and sizes of their first files); one task pinned to each alive node reads
the marker and computes the same fingerprints there. Any difference is refused before any work starts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MARKER_PREFIX = ".videonet-mount-check-"
_FINGERPRINT_FILES = 256  # enough to tell two directories apart, cheap on a large input tree
PROBE_TIMEOUT_S = 120.0


class SharedPathError(ValueError):
    """A local path that some node of the cluster does not see as the driver does."""


def directory_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """A hash of the relative names and sizes of the first files under ``path`` (sorted walk), or None
    when ``path`` is not a directory here."""
    root = Path(path)
    if not root.is_dir():
        return None
    digest, seen = hashlib.sha256(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                size = full.stat().st_size
            except OSError:
                continue
            digest.update(f"{full.relative_to(root).as_posix()}\0{size}\n".encode("utf-8", "surrogateescape"))
            seen += 1
            if seen >= _FINGERPRINT_FILES:
                return digest.hexdigest()
    return digest.hexdigest()


def _read_marker(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def probe_node(marker: str | None, directories: Mapping[str, str]) -> dict[str, Any]:
    """What one node sees: the marker's content (None: not there) and each directory's fingerprint."""
    import socket

    return {
        "host": socket.gethostname(),
        "marker": _read_marker(marker) if marker else None,
        "fingerprints": {flag: directory_fingerprint(path) for flag, path in directories.items()},
    }


def mismatches(
    expected_token: str | None, expected: Mapping[str, str | None], seen: dict[str, Any]
) -> list[str]:
    """The flags whose path this node does not see as the driver does."""
    bad = []
    if expected_token is not None and seen["marker"] != expected_token:
        bad.append("--out")
    bad += [flag for flag, fp in expected.items() if seen["fingerprints"].get(flag) != fp]
    return bad


def check_nodes_see(paths: Mapping[str, Path | str]) -> None:
    """Raise :class:`SharedPathError` unless every alive node of the connected Ray cluster sees each local
    path as this process does. ``--out`` is checked with a marker written into it (created, removed)."""
    if not paths:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    out = paths.get("--out")
    token, marker = None, None
    if out is not None:
        token = secrets.token_hex(16)
        marker = str(Path(out) / f"{MARKER_PREFIX}{token[:12]}")
        Path(marker).write_text(token)
    directories = {flag: str(p) for flag, p in paths.items() if flag != "--out"}
    expected = {flag: directory_fingerprint(p) for flag, p in directories.items()}
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(marker, directories)
            for node in nodes
        ]
        results = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        if marker is not None:
            Path(marker).unlink(missing_ok=True)
    problems = []
    for node, seen in zip(nodes, results, strict=True):
        bad = mismatches(token, expected, seen)
        if bad:
            problems.append((node.get("NodeManagerAddress", seen["host"]), bad))
    if problems:
        address, flags = problems[0]
        shown = ", ".join(f"{flag} {paths[flag]}" for flag in flags)
        raise SharedPathError(
            f"{shown}: not the same directory on node {address} ({len(problems)} of {len(nodes)} nodes "
            "differ): with --address every node must see a local path as one shared mount at the same "
            "path; use a URI (e.g. --out s3://bucket/run, --input s3://bucket/videos) or a shared mount"
        )
