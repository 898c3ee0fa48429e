"""Candidate clips from the official Kinetics-400/600/700 annotation CSVs.

Columns: ``[label,]youtube_id,time_start,time_end,split[,is_cc]`` (test files have no label). A clip is
keyed by ``(youtube_id, time_start, time_end)``, not by the id alone: Kinetics-600 val has 30,000 rows
over 29,994 videos. Ids may start with ``-``; they are only ever used inside URLs and file names, never
as command-line arguments.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videonet_curate.safepath import is_youtube_id, printable
from videonet_curate.sources.base import SourceInputError
from videonet_curate.sources.csvfile import CsvInputError, read_csv
from videonet_curate.sources.remote import RemoteSource

log = logging.getLogger(__name__)

SOURCE = "kinetics"
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")


class KineticsFormatError(ValueError):
    """An annotation file that is not a Kinetics CSV, or a selection it cannot satisfy."""


@dataclass
class KineticsStats:
    """What reading the file did, for the build summary."""

    rows: int = 0  # data rows in the file
    malformed: int = 0  # rows whose times are not numbers (skipped, logged)
    duplicates_dropped: int = 0  # exact repeats of an earlier row
    conflicting_duplicates: int = 0  # same (youtube_id, start, end) as an earlier row, other label
    filtered_split: int = 0
    filtered_class: int = 0
    ids_starting_with_dash: int = 0  # among the selected rows
    bad_ids: int = 0  # rows whose youtube_id is not an 11-character YouTube id (failed rows, bad_id)
    selected: int = 0
    has_labels: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kinetics_clip_id(youtube_id: str, start: int, end: int) -> str:
    """The name Kinetics mirrors use for a clip: ``{youtube_id}_{start:06d}_{end:06d}``."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def bad_id_clip_id(youtube_id: str, start: int, end: int) -> str:
    """A safe, stable clip id for a row whose ``youtube_id`` cannot be used in a file name."""
    digest = hashlib.sha1(f"{youtube_id}|{start}|{end}".encode("utf-8", "surrogateescape")).hexdigest()
    return f"bad-id-{digest[:16]}"


def _time(value: str) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number >= 0 and number == int(number) else None


def _no_usable_rows(path: Path, stats: KineticsStats) -> str:
    why = []
    if stats.malformed:
        why.append(f"{stats.malformed} malformed (times not whole seconds, end not after start, no id)")
    if stats.bad_ids:
        why.append(f"{stats.bad_ids} with ids that are not YouTube ids")
    if stats.filtered_split or stats.filtered_class:
        why.append(f"{stats.filtered_split + stats.filtered_class} outside --split/--classes")
    detail = "; ".join(why) or "the file has no data rows"
    return f"--annotations {path}: no usable row of {stats.rows} ({detail}); pass a Kinetics annotation CSV"


def read_kinetics_annotations(
    csv_path: str | os.PathLike[str],
    *,
    split: str | None = None,
    classes: Iterable[str] | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], KineticsStats]:
    """Read a Kinetics annotation CSV into candidate rows (in file order) and reading statistics.

    ``split`` keeps rows of that split; ``classes`` keeps rows whose label is listed (the file must have
    labels); ``limit`` keeps the first N selected rows.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise KineticsFormatError(
            f"--annotations {path}: no such file; pass a Kinetics CSV such as kinetics-600_val.csv"
        )
    wanted = {c.strip() for c in classes} if classes is not None else None
    stats = KineticsStats()
    candidates: list[dict[str, Any]] = []
    seen: dict[tuple[str, int, int], tuple[str, ...]] = {}
    labels_in_file: set[str] = set()
    try:
        table = read_csv(path, "--annotations")
    except CsvInputError as exc:
        raise KineticsFormatError(str(exc)) from None
    header = table.header
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise KineticsFormatError(
            f"--annotations {path} lacks columns {missing} (has {header}); expected a Kinetics annotation "
            "CSV with [label,]youtube_id,time_start,time_end,split"
        )
    stats.has_labels = "label" in header
    if wanted is not None and not stats.has_labels:
        raise KineticsFormatError(f"--classes needs labels, but {path} has no label column (a test split?)")
    for line_no, record in table.rows:
        stats.rows += 1
        youtube_id = (record.get("youtube_id") or "").strip()
        start, end = _time(record.get("time_start", "")), _time(record.get("time_end", ""))
        if not youtube_id or start is None or end is None or end <= start:
            stats.malformed += 1
            log.warning("%s:%d: skipped malformed row %r", path, line_no, record)
            continue
        label = (record.get("label") or "").strip() or None
        if label:
            labels_in_file.add(label)
        key = (youtube_id, start, end)
        values = tuple(str(v) for v in record.values())
        if key in seen:
            if seen[key] == values:
                stats.duplicates_dropped += 1
            else:
                stats.conflicting_duplicates += 1
                log.warning(
                    "%s:%d: clip %s repeats an earlier row with other values; kept the first",
                    path,
                    line_no,
                    kinetics_clip_id(*key),
                )
            continue
        seen[key] = values
        if split is not None and (record.get("split") or "").strip() != split:
            stats.filtered_split += 1
            continue
        if wanted is not None and label not in wanted:
            stats.filtered_class += 1
            continue
        if limit is not None and len(candidates) >= limit:
            continue
        candidate = {
            "clip_id": kinetics_clip_id(youtube_id, start, end),
            "source": SOURCE,
            "source_id": youtube_id,
            "url": None,
            "start_s": float(start),
            "end_s": float(end),
            "source_label": label,
        }
        if not is_youtube_id(youtube_id):
            # never a path: the row stays in the manifest as failed/bad_id under a hashed clip id
            stats.bad_ids += 1
            candidate["clip_id"] = bad_id_clip_id(youtube_id, start, end)
            candidate["bad_id"] = (
                f"{path.name}:{line_no}: youtube_id {printable(youtube_id)!r} is not a YouTube id "
                "(11 characters of A-Z a-z 0-9 _ -)"
            )
            log.warning("%s", candidate["bad_id"])
        candidates.append(candidate)
    if wanted is not None:
        unknown = sorted(wanted - labels_in_file)
        if unknown:
            raise KineticsFormatError(
                f"--classes {unknown} are not labels in {path}; labels look like {sorted(labels_in_file)[:5]}"
            )
    stats.selected = len(candidates) - stats.bad_ids
    if stats.selected == 0:
        raise KineticsFormatError(_no_usable_rows(path, stats))
    stats.ids_starting_with_dash = sum(c["source_id"].startswith("-") for c in candidates)
    log.info(
        "%s: %d rows, %d selected, %d duplicates dropped",
        path.name,
        stats.rows,
        stats.selected,
        stats.duplicates_dropped,
    )
    return candidates, stats


class KineticsSource(RemoteSource):
    """``--source kinetics``: the rows of an official annotation CSV (--annotations, --split, --classes,
    --limit), downloaded from YouTube or an HTTP mirror (--url-template), or taken from a local copy
    (--mirror)."""

    name = SOURCE

    def check_input(self) -> None:
        path = self.args.options.annotations
        if path is None:
            raise SourceInputError(
                "--source kinetics needs --annotations FILE.csv (an official Kinetics CSV)"
            )
        if not Path(path).is_file():
            raise SourceInputError(
                f"--annotations {path}: no such file; pass an official Kinetics CSV such as "
                "kinetics-600_val.csv"
            )

    def read_candidates(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        options = self.args.options
        assert options.annotations is not None  # check_input refused a missing --annotations
        try:
            candidates, stats = read_kinetics_annotations(
                options.annotations, split=options.split, classes=options.classes, limit=options.limit
            )
        except KineticsFormatError as exc:
            raise SourceInputError(str(exc)) from exc
        return candidates, stats.as_dict()
