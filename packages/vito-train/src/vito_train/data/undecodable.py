"""When to give up on data that does not decode: a window of consecutive steps without one clip.

A step whose batch holds no decodable clip is skipped (the data position moves on, the weights do
not). A few such steps are noise; ``window`` of them in a row mean the manifest's videos are gone or
unreadable, and training on would end in a run that learned nothing while looking finished.
"""

from __future__ import annotations

from pathlib import Path

from vito_train.data.pairs import TrainingDataError


class UndecodableWindow:
    """Counts consecutive steps skipped because every clip failed to decode, and which clips."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self.consecutive = 0
        self.clips: dict[str, None] = {}  # insertion-ordered set of failing clip ids

    def record(self, failed_clips: list[str], *, skipped: bool) -> bool:
        """Record one step; True when the window is full (stop the run)."""
        if not skipped:
            self.consecutive = 0
            self.clips.clear()
        else:  # counted on every rank alike (skipping is decided globally), so all ranks stop together
            self.consecutive += 1
            self.clips.update(dict.fromkeys(failed_clips))
        return self.consecutive >= self.window

    def error(self, step: int, source: Path | None) -> TrainingDataError:
        names = list(self.clips)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        return TrainingDataError(
            f"no clip of {source} decoded for {self.consecutive} consecutive step(s) (up to step {step}; "
            f"failing clips: {shown or 'none recorded'}); check that the videos exist and decode, or "
            "rebuild the manifest without them; last.pt keeps the position, so a fixed run resumes there"
        )
