"""The one error hierarchy of video reading: every failure a file can cause, with its manifest reason code."""

from __future__ import annotations

import os


class VideoError(ValueError):
    """A file that cannot serve frames; ``reason`` is a manifest reason code."""

    reason = "decode_error"

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across Ray workers
        return type(self), (self.path, self.message)


class NotAVideoError(VideoError):
    """Not a video container: an empty file, text, HTML, an image, or a container without video."""

    reason = "not_a_video"


class VideoDecodeError(VideoError):
    """A video container that is damaged: it does not open fully or its frames do not decode."""

    reason = "decode_error"
