"""Driver-side triage before any worker runs: what can be settled without a download.

* ``--mirror``: index the mirror once; rows whose file is absent are settled as ``missing`` here, so a
  30,000-row annotation file with ten local clips sends ten candidates to Ray, not 30,000.
* network sources: each distinct host is checked once (DNS lookup + TCP connect, short timeout). Rows
  of an unreachable host are settled as ``network`` at once, so an offline run finishes in seconds
  instead of timing out and backing off row by row.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from videonet_curate import manifest as mf
from videonet_curate.fetch.materialize import Materialized, source_url
from videonet_curate.fetch.mirror import index_mirror
from videonet_curate.fetch.options import FetchOptions

log = logging.getLogger(__name__)


@dataclass
class FetchPlan:
    to_fetch: list[dict[str, Any]]  # candidates for the workers (mirror hits carry "mirror_path")
    settled: list[dict[str, Any]]  # final manifest rows: missing from the mirror, unreachable host
    stats: dict[str, Any] = field(default_factory=dict)


def check_host(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout_s``, else why not."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"DNS lookup of {host} failed ({exc.strerror or exc})"
    last = "no address"
    for family, kind, proto, _, address in addresses[:3]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout_s)
                sock.connect(address)
                return None
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
    return f"cannot connect to {host}:{port} ({last})"


def _host_port(url: str) -> tuple[str, int] | None:
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    try:
        port = parsed.port
    except ValueError:
        port = None
    return parsed.hostname, port or (443 if parsed.scheme == "https" else 80)


def settled_row(candidate: Mapping[str, Any], result: Materialized) -> dict[str, Any]:
    """A manifest row for a candidate that never reaches a worker."""
    row = {k: candidate.get(k) for k in ("clip_id", "source", "source_id", "source_label")}
    row.update({k: v for k, v in result.as_row().items() if k in mf.SCHEMA.names})
    return row


def _not_fetched(cand: dict[str, Any], status: str, reason: str, detail: str) -> dict[str, Any]:
    """The final row of a candidate settled on the driver, without any download attempt."""
    start, end = cand.get("start_s"), cand.get("end_s")
    result = Materialized(
        path=None,
        start_s=start or 0.0,
        end_s=end or 0.0,
        status=status,
        reason=reason,
        detail=detail,
        attempts=0,
        source_start_s=start,
        source_end_s=end,
    )
    return settled_row(cand, result)


def plan_fetch(candidates: Sequence[Mapping[str, Any]], opts: FetchOptions) -> FetchPlan:
    """Split candidates into those the workers must fetch and rows settled here."""
    to_fetch: list[dict[str, Any]] = []
    settled = [
        _not_fetched(cand, mf.STATUS_FAILED, "bad_id", cand["bad_id"])
        for cand in candidates
        if cand.get("bad_id")
    ]
    candidates = [cand for cand in candidates if not cand.get("bad_id")]
    if opts.mirror_dir is not None:
        index = index_mirror(opts.mirror_dir)
        for cand in candidates:
            path = index.get(cand["clip_id"])
            if path is None:
                detail = f"no {cand['clip_id']}.* under {opts.mirror_dir}"
                settled.append(_not_fetched(cand, mf.STATUS_MISSING, "missing_from_mirror", detail))
            else:
                to_fetch.append({**cand, "mirror_path": str(path)})
        stats = {
            "mirror_files": len(index),
            "mirror_hits": len(to_fetch),
            "missing_from_mirror": sum(row["reason"] == "missing_from_mirror" for row in settled),
        }
        return FetchPlan(to_fetch, settled, stats)

    if opts.proxy:
        # through a proxy only the proxy must be reachable from here; it resolves the hosts itself
        proxy = _host_port(opts.proxy if "://" in opts.proxy else f"http://{opts.proxy}")
        endpoints = {cand["clip_id"]: proxy for cand in candidates}
    else:
        endpoints = {cand["clip_id"]: _host_port(source_url(cand, opts)) for cand in candidates}
    verdicts: dict[tuple[str, int], str | None] = {}
    for endpoint in Counter(e for e in endpoints.values() if e is not None):
        verdicts[endpoint] = check_host(*endpoint, timeout_s=opts.preflight_timeout_s)
        if verdicts[endpoint]:
            log.warning("preflight: %s; its rows are marked network without download", verdicts[endpoint])
    for cand in candidates:
        endpoint = endpoints[cand["clip_id"]]
        why = verdicts.get(endpoint) if endpoint else None
        if why is None:
            to_fetch.append(dict(cand))
            continue
        detail = f"not attempted: {why} (checked once before fetching)"
        settled.append(_not_fetched(cand, mf.STATUS_FAILED, "network", detail))
    stats = {
        "hosts": len(verdicts),
        "hosts_unreachable": sorted(f"{h}:{p}" for (h, p), v in verdicts.items() if v),
        "unreachable_rows": sum(row["reason"] == "network" for row in settled),
    }
    return FetchPlan(to_fetch, settled, stats)
