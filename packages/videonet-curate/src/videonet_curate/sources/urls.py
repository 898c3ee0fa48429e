"""Candidate clips from a list of URLs: any page yt-dlp understands, or a direct video link.

Inputs: ``.txt`` (one URL per line; ``#`` comments and blank lines ignored), or ``.csv`` / ``.parquet``
with a ``url`` column and optional ``start``/``end`` (seconds; ``start_s``/``end_s`` also accepted) and
``label`` columns. Without start/end the whole video is the clip.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = "urls"
_SCHEMES = ("http://", "https://")


class UrlListError(ValueError):
    """A URL list that cannot be read (the message names the file, the line and the fix)."""


def url_clip_id(url: str, start: float | None, end: float | None) -> str:
    """Stable, file-name safe id: a readable slug of the URL's last part plus a hash of URL and segment."""
    tail = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.splitext(tail)[0]).strip("-")[:40] or "url"
    key = f"{url}|{start}|{end}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return f"{slug}_{digest}"


def _number(value: Any, where: str, column: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise UrlListError(f"{where}: {column}={value!r} is not a number of seconds") from exc
    if math.isnan(number):
        return None
    if number < 0:
        raise UrlListError(f"{where}: {column}={value!r} is negative")
    return number


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs with keys url/start/end/label, whatever the file type."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".list", ""):
        out = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                out.append((f"{path}:{line_no}", {"url": text}))
        return out
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        first_line = 2
    elif suffix in (".parquet", ".pq"):
        import pandas as pd

        frame = pd.read_parquet(path)
        first_line = 0
    else:
        raise UrlListError(f"--input {path}: unknown list type {suffix!r}; use .txt, .csv or .parquet")
    columns = {c.strip().lower(): c for c in frame.columns}
    if "url" not in columns:
        raise UrlListError(f"--input {path} has no 'url' column (columns: {list(frame.columns)})")
    pick = {
        "url": columns["url"],
        "start": columns.get("start") or columns.get("start_s"),
        "end": columns.get("end") or columns.get("end_s"),
        "label": columns.get("label"),
    }
    out = []
    for index, record in enumerate(frame.to_dict("records")):
        row = {key: (record[col] if col else None) for key, col in pick.items()}
        where = f"{path}:{index + first_line}" if first_line else f"{path} row {index}"
        out.append((where, row))
    return out


def read_url_list(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a URL list into candidate rows (file order, exact repeats dropped)."""
    path = Path(path)
    if not path.is_file():
        raise UrlListError(f"--input {path}: no such file; pass a .txt, .csv or .parquet list of URLs")
    candidates: list[dict[str, Any]] = []
    seen: set[str] = set()
    dropped = 0
    for where, record in _records(path):
        url = str(record.get("url") or "").strip()
        if not url.startswith(_SCHEMES):
            raise UrlListError(f"{where}: {url!r} is not an http(s) URL")
        start = _number(record.get("start"), where, "start")
        end = _number(record.get("end"), where, "end")
        if (start is None) != (end is None) and end is not None:
            start = start or 0.0
        if start is not None and end is None:
            raise UrlListError(f"{where}: start without end; give both or neither")
        if start is not None and end is not None and end <= start:
            raise UrlListError(f"{where}: end {end} is not after start {start}")
        clip_id = url_clip_id(url, start, end)
        if clip_id in seen:
            dropped += 1
            continue
        seen.add(clip_id)
        label = record.get("label")
        candidates.append(
            {
                "clip_id": clip_id,
                "source": SOURCE,
                "source_id": url,
                "url": url,
                "start_s": start,
                "end_s": end,
                "source_label": str(label) if label not in (None, "") else None,
            }
        )
    if not candidates:
        raise UrlListError(f"--input {path} lists no URLs")
    if dropped:
        log.info("%s: dropped %d repeated URL rows", path, dropped)
    return candidates
