"""Fetch configuration, and the allow-list that keeps yt-dlp's command-execution options out of reach."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videonet_curate.uri import is_uri


class FetchConfigError(ValueError):
    """A fetch option that cannot be used as given (the message names the option and the fix)."""


# Extra yt-dlp options users may set with --ytdlp-opt key=value. Deliberately small: nothing that runs a
# command (exec, postprocessors, external downloaders), writes elsewhere, or changes what is downloaded
# behind the manifest's back. value parsers turn the CLI text into the Python type yt-dlp expects.
YTDLP_OPTION_ALLOWLIST: dict[str, type] = {
    "geo_bypass": bool,
    "geo_bypass_country": str,
    "source_address": str,
    "force_ipv4": bool,
    "force_ipv6": bool,
    "http_chunk_size": int,
    "throttledratelimit": int,
    "ratelimit": int,
    "sleep_interval_requests": float,
    "extractor_args": str,
    "user_agent": str,
    "referer": str,
    "nocheckcertificate": bool,
    "prefer_free_formats": bool,
    "age_limit": int,
}

# Named only to give a precise error; anything outside the allow-list is refused either way.
_FORBIDDEN_HINTS = ("exec", "postprocessor", "external_downloader", "outtmpl", "paths", "batchfile")


def _parse_value(key: str, kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise FetchConfigError(f"--ytdlp-opt {key}={text!r}: expected true or false")
    if key == "extractor_args":
        # yt-dlp wants {"extractor": {"arg": ["value", ...]}}; accept "youtube:player_client=web,ios"
        ie, _, rest = text.partition(":")
        arg, _, values = rest.partition("=")
        if not (ie and arg and values):
            raise FetchConfigError(
                f"--ytdlp-opt extractor_args={text!r}: expected EXTRACTOR:ARG=VALUE[,VALUE]"
            )
        return {ie.strip(): {arg.strip(): [v.strip() for v in values.split(",")]}}
    try:
        return kind(text)
    except ValueError as exc:
        raise FetchConfigError(f"--ytdlp-opt {key}={text!r}: expected a {kind.__name__}") from exc


def parse_ytdlp_options(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into yt-dlp options, refusing keys outside the allow-list."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise FetchConfigError(f"--ytdlp-opt {pair!r}: expected KEY=VALUE")
        if key not in YTDLP_OPTION_ALLOWLIST:
            why = (
                " (options that run commands or redirect output are never allowed)"
                if any(h in key for h in _FORBIDDEN_HINTS)
                else ""
            )
            raise FetchConfigError(
                f"--ytdlp-opt {key!r} is not allowed{why}; allowed keys: {sorted(YTDLP_OPTION_ALLOWLIST)}"
            )
        options[key] = _parse_value(key, YTDLP_OPTION_ALLOWLIST[key], value)
    return options


@dataclass(frozen=True)
class FetchOptions:
    """How candidates become local files. Picklable: it travels to Ray workers."""

    # Kinetics copy, a local directory or a URI prefix (s3://bucket/kinetics); no downloads when set
    mirror_dir: Path | str | None = None
    url_template: str | None = None  # e.g. http://host/{youtube_id}.mp4 (full videos) or .../{clip_id}.mp4
    min_height: int = 360  # smallest format at or above this height
    max_retries: int = 3  # extra attempts for transient failures
    backoff_base_s: float = 1.0  # first retry waits about this long, doubling each time
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0  # a Retry-After longer than this ends the row as blocked
    socket_timeout_s: float = 10.0  # connect/read timeout of every request (yt-dlp and ffmpeg)
    preflight_timeout_s: float = 3.0  # host reachability check before a run (DNS + TCP connect)
    max_rps: float = 2.0  # requests per second, all workers together
    max_concurrent: int = 4  # downloads at once per host, all workers together
    cookies: Path | None = None  # Netscape cookies.txt
    proxy: str | None = None
    ytdlp_options: Mapping[str, Any] = field(default_factory=dict)  # from parse_ytdlp_options only
    # normalisation (ffmpeg): applied only where the downloaded file needs it
    max_fps: float | None = 30.0
    short_side: int | None = 360  # downscale so the shorter side is at most this; never upscale
    crf: int = 23
    preset: str = "veryfast"
    duration_tolerance_s: float = 0.5  # shorter than its segment by more than this: kept, with a note
    min_clip_seconds: float = 1.0  # a clip with fewer seconds of frames is failed/too_short
    limiter_actor: str | None = None  # name of the shared Ray rate-limiter actor, set by the pipeline

    def __post_init__(self) -> None:
        if self.min_height < 0 or self.max_retries < 0:
            raise FetchConfigError("--min-height and --max-retries must be >= 0")
        if self.max_rps <= 0 or self.max_concurrent < 1:
            raise FetchConfigError("--max-rps must be > 0 and --max-concurrent >= 1")
        if self.url_template is not None and "{" not in self.url_template:
            raise FetchConfigError(
                f"--url-template {self.url_template!r} names no field: use {{youtube_id}} or {{clip_id}}, "
                "e.g. http://host/{youtube_id}.mp4"
            )
        if self.cookies is not None and not Path(self.cookies).is_file():
            raise FetchConfigError(f"--cookies {self.cookies}: no such file (a Netscape cookies.txt)")
        # a URI is checked by the build once the storage options are known (RemoteSource.check)
        if self.mirror_dir is not None and not is_uri(self.mirror_dir) and not Path(self.mirror_dir).is_dir():
            raise FetchConfigError(
                f"--mirror {self.mirror_dir}: not a directory; pass the directory (or URI prefix, "
                "s3://bucket/kinetics) that holds the {youtube_id}_{start:06d}_{end:06d}.mp4 files"
            )
        # a second line of defence for options that did not come through parse_ytdlp_options
        bad = set(self.ytdlp_options) - set(YTDLP_OPTION_ALLOWLIST)
        if bad:
            raise FetchConfigError(f"yt-dlp options {sorted(bad)} are not in the allow-list")
