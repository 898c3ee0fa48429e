"""Checks shared by the train and eval bad-input suites: a pickle whose loading would leave a trace, a
snapshot of a tree to prove nothing outside the output root changed, and the one-line error rule."""

from __future__ import annotations

from pathlib import Path


class EvilPickle:
    """Unpickling it would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents and p != skip
    }


def error_line(output: str, needle: str) -> str:
    """The one line of ``output`` naming ``needle``; fails on tracebacks or multi-line errors."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, output
    assert needle in lines[0], (needle, output)
    return lines[0]
