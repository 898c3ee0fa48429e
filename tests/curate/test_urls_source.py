"""Reading URL lists (.txt, .csv, .parquet) into candidates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from videonet_curate.sources.urls import UrlListError, read_url_list, url_clip_id


def test_txt_list_skips_comments_and_repeats(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# my clips\nhttp://h/a.mp4\n\nhttps://h/b.mp4?x=1\nhttp://h/a.mp4\n")
    rows = read_url_list(path)
    assert [r["url"] for r in rows] == ["http://h/a.mp4", "https://h/b.mp4?x=1"]
    assert all(r["start_s"] is None and r["end_s"] is None and r["source"] == "urls" for r in rows)
    assert rows[0]["clip_id"].startswith("a_") and rows[1]["clip_id"].startswith("b_")


def test_csv_and_parquet_with_segments(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"URL": ["http://h/v.mp4", "http://h/v.mp4"], "start": [1, 5], "end": [4, 9], "label": ["cat", ""]}
    )
    frame.to_csv(tmp_path / "l.csv", index=False)
    frame.to_parquet(tmp_path / "l.parquet")
    for name in ("l.csv", "l.parquet"):
        rows = read_url_list(tmp_path / name)
        assert [(r["start_s"], r["end_s"]) for r in rows] == [(1.0, 4.0), (5.0, 9.0)]
        assert rows[0]["clip_id"] != rows[1]["clip_id"]  # same URL, other segment: other clip
        assert rows[0]["source_label"] == "cat" and rows[1]["source_label"] is None
    assert url_clip_id("http://h/v.mp4", 1.0, 4.0) == read_url_list(tmp_path / "l.csv")[0]["clip_id"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("url\nftp://h/x.mp4\n", "not an http"),
        ("url,start,end\nhttp://h/x,5,2\n", "not after start"),
        ("url,start,end\nhttp://h/x,abc,2\n", "not a number"),
        ("link\nhttp://h/x\n", "no 'url' column"),
    ],
)
def test_bad_lists_name_the_problem(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UrlListError, match=match):
        read_url_list(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(UrlListError, match="no such file"):
        read_url_list(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_text("# nothing\n")
    with pytest.raises(UrlListError, match="lists no URLs"):
        read_url_list(tmp_path / "e.txt")


def test_spreadsheet_csv_with_semicolons_bom_crlf_and_decimal_commas(tmp_path: Path) -> None:
    # Excel "CSV UTF-8" in a de/fr locale: BOM, CRLF, ";" between fields and "," as the decimal mark
    path = tmp_path / "list.csv"
    text = "\ufeffURL;Start;End;Label\r\nhttps://example.org/a.mp4;1,5;4;cat\r\nhttps://example.org/b.mp4;;;\r\n"
    path.write_bytes(text.encode("utf-8"))
    rows = read_url_list(path)
    assert [(r["url"], r["start_s"], r["end_s"], r["source_label"]) for r in rows] == [
        ("https://example.org/a.mp4", 1.5, 4.0, "cat"),
        ("https://example.org/b.mp4", None, None, None),
    ]


def test_lists_that_are_not_utf8_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes("https://example.org/caf\u00e9.mp4\n".encode("latin-1"))
    with pytest.raises(UrlListError, match="not UTF-8.*save the list as UTF-8"):
        read_url_list(path)
