"""sources/local.py: the directory walk, clip ids, candidate and failure rows."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from videonet_curate import manifest as mf
from videonet_curate.sources import local
from videonet_curate.sources.local import (
    PROBE_HERE_MAX_FILES,
    discover_local,
    failure_row,
    iter_video_files,
    local_candidates,
    local_clip_id,
    too_short_row,
)
from videonet_curate.video import NotAVideoError, VideoDecodeError, VideoInfo, probe_video

CLIP_ID = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{8}-[0-9]{9}$")


def test_walk_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b.mp4", "a/z.avi", "a/notes.txt", "a/.partial.mp4", ".cache/x.mp4", "c/d/e.MPG"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # must not be followed
    found = [p.relative_to(tmp_path).as_posix() for p in iter_video_files(tmp_path)]
    assert found == ["a/notes.txt", "a/z.avi", "b.mp4", "c/d/e.MPG"]  # no extension filter


def test_walk_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.mp4").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="--input"):
        list(iter_video_files(tmp_path / "f.mp4"))


def test_clip_id_format_is_stable_and_file_name_safe() -> None:
    cid = local_clip_id("videos/cockatoo.mp4", 10.0)
    assert CLIP_ID.match(cid)
    assert cid.startswith("videos_cockatoo_mp4-") and cid.endswith("-000010000")
    assert local_clip_id("videos/cockatoo.mp4", 10.0) == cid
    assert local_clip_id("videos/cockatoo.mp4", 0.0) != cid
    weird = local_clip_id("ünï cödé/../a b:c?.mp4", 1.5)
    assert CLIP_ID.match(weird) and weird.endswith("-000001500")


def test_clip_ids_of_colliding_slugs_differ() -> None:
    assert local_clip_id("a b.mp4", 0.0) != local_clip_id("a_b.mp4", 0.0)
    long = "x" * 300
    assert len(local_clip_id(f"{long}/one.mp4", 0.0)) < 120
    assert local_clip_id(f"{long}/one.mp4", 0.0).startswith("x")


def test_candidates_cover_the_video_in_windows(tmp_path: Path) -> None:
    info = VideoInfo(
        duration_s=79.5, fps=10.0, width=768, height=576, codec="msmpeg4", num_frames=795, has_audio=False
    )
    rows = local_candidates(tmp_path / "sub" / "vtest.avi", info, tmp_path, 10.0)
    assert [(r["start_s"], r["end_s"]) for r in rows][-1] == (70.0, 79.5)
    assert len(rows) == 8
    assert {r["source_id"] for r in rows} == {"sub/vtest.avi"}
    assert len({r["clip_id"] for r in rows}) == 8
    first = rows[0]
    assert first["source"] == "local" and first["codec"] == "msmpeg4" and first["width"] == 768
    assert first["clip_id"].endswith("-000000000")
    table = mf.rows_to_table([{**r, "status": mf.STATUS_LOW_SCORE, "reason": "low_score"} for r in rows])
    mf.validate(table)  # the rows honour the manifest contract


def test_candidates_of_a_real_probe(sample_videos: Path) -> None:
    path = sample_videos / "realshort.mp4"
    rows = local_candidates(path, probe_video(path), sample_videos.parent, 10.0)
    assert len(rows) == 1  # 1.2 s: one clip covering it
    assert rows[0]["source_id"] == "videos/realshort.mp4"
    assert rows[0]["end_s"] == pytest.approx(1.2, abs=0.01)
    assert local_candidates(path, probe_video(path), sample_videos.parent, 10.0, min_clip_seconds=2.0) == []


def test_failure_rows_carry_the_reason_code(tmp_path: Path, sample_videos: Path) -> None:
    text = tmp_path / "docs" / "readme.mp4"
    text.parent.mkdir()
    text.write_text("not a video\n")
    with pytest.raises(NotAVideoError) as not_video:
        probe_video(text)
    row = failure_row(text, tmp_path, not_video.value)
    assert row["status"] == mf.STATUS_FAILED and row["reason"] == "not_a_video"
    assert row["source_id"] == "docs/readme.mp4" and "readme.mp4" in row["detail"]
    assert row["clip_id"] == local_clip_id("docs/readme.mp4", 0.0)

    cut = tmp_path / "bikes.mp4"
    shutil.copyfile(sample_videos / "bikes.mp4", cut)
    cut.write_bytes(cut.read_bytes()[:150_000])
    with pytest.raises(VideoDecodeError) as broken:
        probe_video(cut)
    assert failure_row(cut, tmp_path, broken.value)["reason"] == "decode_error"
    assert failure_row(cut, tmp_path, RuntimeError("boom"))["reason"] == "internal"
    assert failure_row(cut, tmp_path, RuntimeError("1 s"), reason="too_short")["reason"] == "too_short"
    with pytest.raises(ValueError, match="reason"):
        failure_row(cut, tmp_path, RuntimeError("x"), reason="bogus")
    mf.validate(mf.rows_to_table([row]))


def test_too_short_row(tmp_path: Path) -> None:
    info = VideoInfo(
        duration_s=0.4, fps=25.0, width=64, height=48, codec="h264", num_frames=10, has_audio=False
    )
    assert local_candidates(tmp_path / "blip.mp4", info, tmp_path, 10.0) == []
    row = too_short_row(tmp_path / "blip.mp4", info, tmp_path)
    assert row["status"] == "failed" and row["reason"] == "too_short"
    assert "0.40 s" in row["detail"] and row["end_s"] == 0.4 and row["codec"] == "h264"
    mf.validate(mf.rows_to_table([row]))


@pytest.mark.parametrize(
    "files, on_ray", [(3, False), (PROBE_HERE_MAX_FILES, False), (PROBE_HERE_MAX_FILES + 1, True)]
)
def test_a_small_input_is_probed_here_a_large_one_on_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: int, on_ray: bool
) -> None:
    shipped: list[int] = []

    def fake_ray_map(fn, batches, num_cpus=1):  # what Ray would run, recorded
        shipped.extend(len(b[0]) for b in batches)
        return [fn(b) for b in batches]

    monkeypatch.setattr(local, "_ray_map_ordered", fake_ray_map)
    for i in range(files):
        (tmp_path / f"{i:03d} not a video.mp4").write_bytes(b"x")
    candidates, failures = discover_local(tmp_path, 2.0, use_ray=True)
    assert sum(shipped) == (files if on_ray else 0)
    assert not candidates and len(failures) == files  # the same rows either way
    assert {row["reason"] for row in failures} == {"not_a_video"}
    shipped.clear()
    discover_local(tmp_path, 2.0, use_ray=False)
    assert not shipped
