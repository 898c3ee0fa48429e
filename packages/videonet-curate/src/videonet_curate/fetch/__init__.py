"""Fetching candidate clips: yt-dlp segment downloads, ffmpeg normalisation, validation by decoding,
a failure taxonomy with retries, and rate limits shared by all workers.

Public API: :func:`materialize` (one candidate -> :class:`Materialized`), :class:`FetchOptions`,
:func:`plan_fetch` (driver-side: mirror lookup and host preflight before any worker runs).
"""

from videonet_curate.fetch.materialize import Materialized, materialize, source_url
from videonet_curate.fetch.options import FetchConfigError, FetchOptions, parse_ytdlp_options
from videonet_curate.fetch.taxonomy import Failure, FetchFailed, classify_exception

__all__ = [
    "Failure",
    "FetchConfigError",
    "FetchFailed",
    "FetchOptions",
    "Materialized",
    "classify_exception",
    "materialize",
    "parse_ytdlp_options",
    "source_url",
]
