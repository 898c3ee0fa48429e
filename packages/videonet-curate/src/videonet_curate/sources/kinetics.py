"""Candidate clips from the official Kinetics-400/600/700 annotation CSVs.

Columns: ``[label,]youtube_id,time_start,time_end,split[,is_cc]`` (test files have no label). A clip is
keyed by ``(youtube_id, time_start, time_end)``, not by the id alone: Kinetics-600 val has 30,000 rows
over 29,994 videos. Ids may start with ``-``; they are only ever used inside URLs and file names, never
as command-line arguments.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    selected: int = 0
    has_labels: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kinetics_clip_id(youtube_id: str, start: int, end: int) -> str:
    """The name Kinetics mirrors use for a clip: ``{youtube_id}_{start:06d}_{end:06d}``."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def _time(value: str) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number >= 0 and number == int(number) else None


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
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise KineticsFormatError(
                f"{path} lacks columns {missing} (has {header}); expected a Kinetics annotation CSV with "
                "[label,]youtube_id,time_start,time_end,split"
            )
        stats.has_labels = "label" in header
        if wanted is not None and not stats.has_labels:
            raise KineticsFormatError(
                f"--classes needs labels, but {path} has no label column (a test split?)"
            )
        for line_no, record in enumerate(reader, start=2):
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
            candidates.append(
                {
                    "clip_id": kinetics_clip_id(youtube_id, start, end),
                    "source": SOURCE,
                    "source_id": youtube_id,
                    "url": None,
                    "start_s": float(start),
                    "end_s": float(end),
                    "source_label": label,
                }
            )
    if wanted is not None:
        unknown = sorted(wanted - labels_in_file)
        if unknown:
            raise KineticsFormatError(
                f"--classes {unknown} are not labels in {path}; labels look like {sorted(labels_in_file)[:5]}"
            )
    stats.selected = len(candidates)
    stats.ids_starting_with_dash = sum(c["source_id"].startswith("-") for c in candidates)
    log.info(
        "%s: %d rows, %d selected, %d duplicates dropped",
        path.name,
        stats.rows,
        stats.selected,
        stats.duplicates_dropped,
    )
    return candidates, stats
