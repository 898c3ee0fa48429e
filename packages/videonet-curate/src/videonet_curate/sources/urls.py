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

from videonet_curate.safepath import http_url_problem, printable
from videonet_curate.sources.base import SourceInputError
from videonet_curate.sources.remote import RemoteSource

log = logging.getLogger(__name__)

SOURCE = "urls"


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
    if isinstance(value, str) and re.fullmatch(r"\s*\d+,\d+\s*", value):
        value = value.replace(",", ".")  # a decimal comma, as spreadsheets in de/fr/nl locales save it
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise UrlListError(f"{where}: {column}={printable(value)!r} is not a number of seconds") from exc
    if math.isnan(number):
        return None
    if math.isinf(number) or number < 0:
        raise UrlListError(f"{where}: {column}={printable(value)!r} is not a finite number of seconds >= 0")
    return number


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs with keys url/start/end/label, whatever the file type."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".list", ""):
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UrlListError(
                f"--input {path}: not UTF-8 (byte at offset {exc.start}); save the list as UTF-8 text"
            ) from None
        out = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                out.append((f"{path}:{line_no}", {"url": text}))
        return out
    if suffix == ".csv":
        from videonet_curate.sources.csvfile import CsvInputError, read_csv

        try:
            table = read_csv(path, "--input")
        except CsvInputError as exc:
            raise UrlListError(str(exc)) from None
        columns = {c.lower(): c for c in table.header}
        if "url" not in columns:
            raise UrlListError(f"--input {path} has no 'url' column (columns: {table.header})")
        pick = _pick(columns)
        return [
            (f"{path}:{line}", {key: (record.get(col) if col else None) for key, col in pick.items()})
            for line, record in table.rows
        ]
    if suffix in (".parquet", ".pq"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise UrlListError(f"--input {path}: not a readable Parquet file ({exc})") from None
    else:
        raise UrlListError(f"--input {path}: unknown list type {suffix!r}; use .txt, .csv or .parquet")
    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "url" not in columns:
        raise UrlListError(f"--input {path} has no 'url' column (columns: {list(frame.columns)})")
    pick = _pick(columns)
    return [
        (f"{path} row {index}", {key: (record[col] if col else None) for key, col in pick.items()})
        for index, record in enumerate(frame.to_dict("records"))
    ]


def _pick(columns: dict[str, Any]) -> dict[str, Any]:
    """Which column holds url/start/end/label (``start_s``/``end_s`` accepted too)."""
    return {
        "url": columns["url"],
        "start": columns.get("start") or columns.get("start_s"),
        "end": columns.get("end") or columns.get("end_s"),
        "label": columns.get("label"),
    }


def check_url(url: str, where: str) -> None:
    """Refuse what is not an absolute http(s) URL with a host (the message names the line)."""
    problem = http_url_problem(url)
    if problem:
        raise UrlListError(f"{where}: {problem}")


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
        check_url(url, where)
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
        raise UrlListError(f"--input {path} lists no URLs; put one http(s) URL per line (or a url column)")
    if dropped:
        log.info("%s: dropped %d repeated URL rows", path, dropped)
    return candidates


class UrlListSource(RemoteSource):
    """``--source urls``: every URL of the list given as --input (the first --limit), always downloaded."""

    name = SOURCE

    def check(self) -> None:
        if self.fetch.mirror_dir is not None:
            raise SourceInputError("--mirror is for --source kinetics; a URL list is always downloaded")
        super().check()

    def check_input(self) -> None:
        path = self.args.input_path
        if path is None:
            raise SourceInputError(
                "--source urls needs --input FILE (.txt, .csv or .parquet with a url column)"
            )
        if not Path(path).is_file():
            raise SourceInputError(
                f"--input {path}: no such file; pass a .txt, .csv or .parquet list of URLs"
            )

    def read_candidates(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        path, limit = self.args.input_path, self.args.options.limit
        assert path is not None  # check_input refused a missing --input
        try:
            candidates = read_url_list(path)
        except UrlListError as exc:
            raise SourceInputError(str(exc)) from exc
        return (candidates[:limit] if limit else candidates), {"listed": len(candidates)}
