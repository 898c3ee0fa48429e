"""Checks on where a command will write, made before any work.

Both tools use these (vito-eval imports them): an unwritable ``--out`` is a one-line input error
(exit 2) before minutes of training or feature extraction, not a traceback at the end.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be written (a file where a folder is needed, no permission)."""


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_folder_can_exist(folder: Path, option: str, named: Path) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise OutputError(
            f"{option} {named}: {base} is a file, so no folder can be made there; pick another path"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {named}: {base} is not writable by this user; pick a writable folder")


def check_output_dir(path: Path, option: str) -> None:
    """``path`` is, or can be created as, a writable directory. Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is an existing file, not a folder; pass a folder path")
    _check_folder_can_exist(path, option, path)


def check_output_file(path: Path, option: str) -> None:
    """``path`` can be written as a file (its folder exists or can be made). Writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; pass a file path")
    _check_folder_can_exist(path.parent, option, path)
