"""Reading Kinetics annotation CSVs: the in-repo slice always, the real files when ../shared is present."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from videonet_curate.sources.kinetics import KineticsFormatError, kinetics_clip_id, read_kinetics_annotations

SLICE = Path(__file__).resolve().parents[1] / "data" / "kinetics-slice.csv"


def test_slice_parses_with_quoted_labels_dash_ids_and_a_repeated_row() -> None:
    candidates, stats = read_kinetics_annotations(SLICE)
    # the slice is 40 real rows of kinetics-400_val.csv; one row appears twice (cut from two selections)
    assert stats.rows == 40
    assert stats.duplicates_dropped == 1
    assert stats.selected == len(candidates) == 39
    assert stats.has_labels
    ids = [c["clip_id"] for c in candidates]
    assert len(set(ids)) == len(ids)
    drumming = next(c for c in candidates if c["source_id"] == "--nQbRBEz2s")
    assert drumming["source_label"] == "air drumming"  # quoted label with a space
    assert drumming["clip_id"] == "--nQbRBEz2s_000104_000114"
    assert (drumming["start_s"], drumming["end_s"]) == (104.0, 114.0)
    assert drumming["source"] == "kinetics" and drumming["url"] is None
    assert stats.ids_starting_with_dash == sum(c["source_id"].startswith("-") for c in candidates) >= 10


def test_split_classes_and_limit_select_rows(tmp_path: Path) -> None:
    selected, stats = read_kinetics_annotations(SLICE, classes=["air drumming"])
    assert selected and {c["source_label"] for c in selected} == {"air drumming"}
    assert stats.filtered_class == 39 - len(selected)
    with pytest.raises(KineticsFormatError, match="no usable row of 40 .*outside --split/--classes"):
        read_kinetics_annotations(SLICE, split="train")  # nothing to do is bad input, not an empty manifest
    assert len(read_kinetics_annotations(SLICE, split="val", limit=5)[0]) == 5
    with pytest.raises(KineticsFormatError, match="not labels"):
        read_kinetics_annotations(SLICE, classes=["no such action"])


def test_clip_id_is_file_name_safe_and_zero_padded() -> None:
    assert kinetics_clip_id("-abc_DEF12", 7, 17) == "-abc_DEF12_000007_000017"


def test_ids_that_are_not_youtube_ids_become_bad_id_rows(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    hostile = ["../../x", "a/b/c/d/e/f", "short", "twelve_chars", "dQw4w9WgXc*", "..........."]
    path.write_text(
        "youtube_id,time_start,time_end\n" + "".join(f"{i},1,11\n" for i in ["dQw4w9WgXcQ", *hostile])
    )
    rows, stats = read_kinetics_annotations(path)
    assert stats.bad_ids == len(hostile) and stats.selected == 1
    assert rows[0]["clip_id"] == "dQw4w9WgXcQ_000001_000011" and "bad_id" not in rows[0]
    for row, raw in zip(rows[1:], hostile, strict=True):
        assert row["source_id"] == raw and row["clip_id"].startswith("bad-id-") and "/" not in row["clip_id"]
        assert "is not a YouTube id" in row["bad_id"]


def test_spreadsheet_csvs_are_read(tmp_path: Path) -> None:
    # Excel "CSV UTF-8" in a German locale: BOM, CRLF, semicolons; LibreOffice with tabs
    rows = [
        ("abseiling", "0wR5jVB-WPk", "417", "427", "val"),
        ("air drumming", "--nQbRBEz2s", "104", "114", "val"),
    ]
    header = ("label", "youtube_id", "time_start", "time_end", "split")
    for name, sep, newline, bom in [("excel.csv", ";", "\r\n", "\ufeff"), ("calc.csv", "\t", "\n", "")]:
        path = tmp_path / name
        text = bom + newline.join(sep.join(r) for r in [header, *rows]) + newline
        path.write_bytes(text.encode("utf-8"))
        got, stats = read_kinetics_annotations(path)
        assert [c["clip_id"] for c in got] == ["0wR5jVB-WPk_000417_000427", "--nQbRBEz2s_000104_000114"]
        assert got[1]["source_label"] == "air drumming" and stats.has_labels
    cp1252 = tmp_path / "ansi.csv"
    cp1252.write_bytes("label,youtube_id,time_start,time_end\ncaf\u00e9,0wR5jVB-WPk,1,11\n".encode("cp1252"))
    with pytest.raises(KineticsFormatError, match="not UTF-8 .* line 2.*CSV UTF-8"):
        read_kinetics_annotations(cp1252)


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(KineticsFormatError, match="no such file"):
        read_kinetics_annotations(tmp_path / "absent.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(KineticsFormatError, match="lacks columns"):
        read_kinetics_annotations(wrong)
    unlabelled = tmp_path / "test.csv"
    unlabelled.write_text("youtube_id,time_start,time_end,split\n-x1_abcdefg,1,11,test\nbad,one,11,test\n")
    rows, stats = read_kinetics_annotations(unlabelled)
    assert [r["clip_id"] for r in rows] == ["-x1_abcdefg_000001_000011"] and stats.malformed == 1
    with pytest.raises(KineticsFormatError, match="no label column"):
        read_kinetics_annotations(unlabelled, classes=["x"])


@pytest.mark.needs_shared
@pytest.mark.parametrize(
    ("name", "rows", "has_labels", "distinct_videos"),
    [
        ("kinetics-400_val.csv", 19_906, True, 19_906),
        ("kinetics-400_test.csv", 38_685, False, 38_685),
        ("kinetics-600_val.csv", 30_000, True, 29_994),
        ("kinetics-600_test.csv", 72_924, False, 72_924),
    ],
)
def test_real_files_parse_completely(
    kinetics_dir: Path, name: str, rows: int, has_labels: bool, distinct_videos: int
) -> None:
    path = kinetics_dir / name
    candidates, stats = read_kinetics_annotations(path)
    assert stats.rows == rows and stats.selected == rows
    assert stats.malformed == stats.duplicates_dropped == stats.conflicting_duplicates == 0
    assert stats.has_labels is has_labels
    assert len({c["clip_id"] for c in candidates}) == rows  # (id, start, end) is the key
    assert len({c["source_id"] for c in candidates}) == distinct_videos
    assert all(c["end_s"] - c["start_s"] == 10 for c in candidates)
    with open(path, newline="") as handle:
        dash_ids = sum(r["youtube_id"].startswith("-") for r in csv.DictReader(handle))
    assert stats.ids_starting_with_dash == dash_ids > 100
    assert all((c["source_label"] is not None) is has_labels for c in candidates)
