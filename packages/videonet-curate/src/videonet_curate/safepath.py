"""Names from the input never become paths unchecked, and no write lands outside its root.

Ids come from files other people wrote (annotation CSVs, URL lists, directory trees). Each source checks
its ids where they enter (:func:`is_youtube_id` for Kinetics, :func:`is_safe_name` for every clip id);
a bad id becomes a ``failed`` row with reason ``bad_id``. As a second line of defence every place that
writes or deletes under an output root calls :func:`contained` first, so even a tampered manifest or a
bug upstream cannot make the tool touch anything outside ``--out``.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from urllib.parse import urlparse

# YouTube video ids: exactly 11 characters of the URL-safe base64 alphabet (they may start with "-").
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
# A clip id used as a file name: starts with a letter, digit or "-"/"_", then letters, digits and ._-,
# at most 200 characters (file systems allow 255 bytes; the suffixes we add need room), and no "..".
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


class PathEscapeError(RuntimeError):
    """A write or delete that would land outside its root (a bug or a hostile id; never done)."""


def is_youtube_id(value: str) -> bool:
    """True for a well-formed YouTube video id (11 characters of ``[A-Za-z0-9_-]``)."""
    return isinstance(value, str) and _YOUTUBE_ID.fullmatch(value) is not None


def is_safe_name(value: str) -> bool:
    """True when ``value`` can be used as one file-name component (no separators, no ``..``)."""
    return isinstance(value, str) and _SAFE_NAME.fullmatch(value) is not None and ".." not in value


def printable(value: object, limit: int = 80) -> str:
    """A short, one-line, printable rendering of an untrusted value for messages."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL with a host, or None when it is one.

    A URL from a list or a --url-template reaches yt-dlp and ffmpeg, which would also open ``file://``
    and other schemes; callers put the answer after the place the URL came from.
    """
    shown = printable(url)
    if not url.startswith(("http://", "https://")):
        return f"{shown!r} is not an http(s) URL; each row needs one http:// or https:// URL"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return f"{shown!r} contains spaces or control characters; percent-encode them"
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"{shown!r} is not a valid URL ({exc})"
    if not parsed.hostname:
        return f"{shown!r} has no host name"
    return None


def contained(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (absolute, symlinks resolved) if it lies under ``root``; else raise :class:`PathEscapeError`.

    Call it before every write or delete under an output root. ``root`` itself counts as inside.
    """
    base = Path(root).resolve()
    target = Path(path)
    target = (base / target if not target.is_absolute() else target).resolve()
    if target != base and base not in target.parents:
        raise PathEscapeError(f"refusing to write {target}: it is outside {base}")
    return target


def glob_literal(prefix: str, pattern_suffix: str = "") -> str:
    """A glob pattern: ``prefix`` literally (``*?[`` in ids are no wildcards), then ``pattern_suffix``."""
    return glob.escape(prefix) + pattern_suffix


def is_inside(inner: str | os.PathLike[str], outer: str | os.PathLike[str]) -> bool:
    """True when ``inner`` is ``outer`` or lies below it (both resolved)."""
    a, b = Path(inner).resolve(), Path(outer).resolve()
    return a == b or b in a.parents
