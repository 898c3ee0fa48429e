"""Download one video, or only a segment of it, with yt-dlp's Python API (never a shell command).

A segment is requested with ``download_ranges`` + ``force_keyframes_at_cuts``: yt-dlp hands the cut to
ffmpeg, which fetches only the bytes it needs through HTTP Range requests. yt-dlp's own retries are
off (the caller retries with backoff and counts attempts); every request has a socket timeout, and
ffmpeg gets a read/write timeout so a stalled server cannot hang a worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.networking import Request
from yt_dlp.utils import DownloadError, download_range_func

from videonet_curate.fetch.normalize import NormalizeSpec, ffmpeg_output_args
from videonet_curate.fetch.options import FetchOptions
from videonet_curate.fetch.taxonomy import Failure, FetchFailed, classify_exception

log = logging.getLogger(__name__)

# the largest stream fetched whole when ffmpeg failed on it (see fetch_whole_stream)
_WHOLE_STREAM_MAX_BYTES = 512 * 1024 * 1024


class _YtdlpLogger:
    """Route yt-dlp's messages into logging: its errors are ours to classify, not to print."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


def format_selector(min_height: int) -> str:
    """The smallest mp4 at or above ``min_height`` (video only: audio is never used), else any format
    at or above it. ``>=?`` lets formats of unknown height (direct links) through."""
    h = int(min_height)
    return f"bv*[ext=mp4][height>=?{h}]/b[ext=mp4][height>=?{h}]/bv*[height>=?{h}]/b[height>=?{h}]"


def ytdlp_params(opts: FetchOptions, workdir: Path, *, segment: tuple[float, float] | None) -> dict[str, Any]:
    """The YoutubeDL parameters for one download into ``workdir``."""
    timeout_us = str(int(opts.socket_timeout_s * 1_000_000))
    params: dict[str, Any] = {
        **dict(opts.ytdlp_options),  # the allow-listed extras first, so nothing below can be overridden
        "outtmpl": {"default": str(workdir / "download.%(ext)s")},
        "paths": {},
        "format": format_selector(opts.min_height),
        "format_sort": ["+res", "+size", "+br"],  # ascending: the smallest format that qualifies
        "noplaylist": True,
        "quiet": True,  # also passes -loglevel quiet to ffmpeg
        "logger": _YtdlpLogger(),
        "no_warnings": True,
        "noprogress": True,
        "overwrites": True,
        "socket_timeout": opts.socket_timeout_s,
        "retries": 0,
        "fragment_retries": 0,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "external_downloader_args": {"ffmpeg_i": ["-rw_timeout", timeout_us]},
    }
    if segment is not None:
        params["download_ranges"] = download_range_func(None, [segment])
        params["force_keyframes_at_cuts"] = True
        # the cut re-encodes anyway: normalise in the same pass rather than encoding twice
        spec = NormalizeSpec(opts.max_fps, opts.short_side, opts.crf, opts.preset)
        params["external_downloader_args"]["ffmpeg_o"] = ffmpeg_output_args(spec)
    if opts.cookies is not None:
        params["cookiefile"] = str(opts.cookies)
    if opts.proxy:
        params["proxy"] = opts.proxy
    return params


def fetch_whole_stream(ydl: yt_dlp.YoutubeDL, fmt: dict[str, Any], dest: Path) -> Failure | None:
    """After ffmpeg failed on a stream: fetch it ourselves (same cookies, proxy, timeout) into ``dest``.

    ffmpeg's exit code says nothing and its stderr is not ours to read, so we request the bytes as
    ffmpeg did and look: a transport error or short body means network, an HTML or empty body means
    not_a_video. A complete body (up to a size cap) is kept in ``dest`` (None is returned): the caller
    decodes it and cuts the segment itself, which also rescues servers that ignore Range requests.
    """
    url = fmt.get("url")
    if not url or not str(url).startswith(("http://", "https://")):
        return Failure("decode_error", "ffmpeg could not read the stream")
    headers = {**(fmt.get("http_headers") or {}), "Range": "bytes=0-"}
    try:
        response = ydl.urlopen(Request(url, headers=headers))
    except Exception as exc:  # noqa: BLE001 - classified
        return classify_exception(exc)
    received = 0
    head = b""
    try:
        with response, open(dest, "wb") as out:
            ctype = (response.headers.get("Content-Type") or "").lower()
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                if len(head) < 512:
                    head += chunk[: 512 - len(head)]
                received += len(chunk)
                if received > _WHOLE_STREAM_MAX_BYTES:
                    return Failure(
                        "network", f"ffmpeg failed on a stream larger than {_WHOLE_STREAM_MAX_BYTES} bytes"
                    )
                out.write(chunk)
    except Exception as exc:  # noqa: BLE001 - classified
        failure = classify_exception(exc)
        return Failure(failure.reason, f"connection failed after {received} bytes: {failure.detail}")
    if "html" in ctype or head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return Failure("not_a_video", f"the server sent {ctype or 'text'} instead of a video")
    if received == 0:
        return Failure("not_a_video", "the server sent an empty body")
    if expected is not None and expected.isdigit() and received < int(expected):
        return Failure("network", f"the connection closed after {received} of {expected} bytes")
    log.info(
        "ffmpeg failed on %s; fetched the whole %d-byte stream instead (HTTP %s)",
        url,
        received,
        response.status,
    )
    return None


def download(
    url: str, workdir: Path, opts: FetchOptions, *, segment: tuple[float, float] | None
) -> tuple[Path, bool]:
    """Download ``url`` (only ``segment`` when given) into ``workdir``: (the file, whether it still
    needs cutting to the segment, i.e. a whole stream fetched after ffmpeg failed on the range).

    Raises :class:`FetchFailed` with a classified reason on any failure.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    params = ytdlp_params(opts, workdir, segment=segment)
    with yt_dlp.YoutubeDL(params) as ydl:
        try:
            info = ydl.extract_info(url, download=False)
        except Exception as exc:  # noqa: BLE001 - classified
            raise FetchFailed(classify_exception(exc)) from exc
        if info is None:
            raise FetchFailed(Failure("unavailable", f"yt-dlp found nothing at {url}"))
        try:
            info = ydl.process_ie_result(info, download=True)
        except DownloadError as exc:
            if "ffmpeg exited with code" not in str(exc):
                raise FetchFailed(classify_exception(exc)) from exc
            whole = workdir / "whole-stream.bin"
            failure = fetch_whole_stream(ydl, (info.get("requested_formats") or [info])[0], whole)
            if failure is not None:
                raise FetchFailed(failure) from exc
            return whole, segment is not None
        except Exception as exc:  # noqa: BLE001 - classified
            raise FetchFailed(classify_exception(exc)) from exc
    files = [Path(d["filepath"]) for d in (info.get("requested_downloads") or []) if d.get("filepath")]
    files = [f for f in files if f.exists()] or sorted(
        p for p in workdir.glob("download.*") if not p.name.endswith((".part", ".ytdl"))
    )
    if not files:
        raise FetchFailed(Failure("not_a_video", f"yt-dlp reported success for {url} but wrote no file"))
    return files[0], False
