"""Real data is kept: a Kinetics mirror clip shorter than its annotated segment (the source video ended
before the segment did, as for over a quarter of the CVDF Kinetics-700-2020 test clips) ends in the
manifest with its true end and a note, not as failed/too_short."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from videonet_curate.cli import app
from videonet_curate.fetch.validate import decode_clip

SLICE = Path(__file__).resolve().parents[1] / "data" / "kinetics-slice.csv"


def test_a_mirror_clip_shorter_than_its_segment_is_kept(sample_videos: Path, tmp_path: Path) -> None:
    header, first, second = SLICE.read_text().splitlines()[:3]  # two real rows of kinetics-400_val.csv
    annotations = tmp_path / "val.csv"
    annotations.write_text("\n".join([header, first, second]) + "\n")
    mirror = tmp_path / "mirror"
    (mirror / "abseiling").mkdir(parents=True)
    # the first row asks for 417..427 (10 s); its file holds 8 s of real video: the source ended early
    _, youtube_id, start, end, *_ = first.split(",")
    short = mirror / "abseiling" / f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"
    shutil.copy(sample_videos / "cup.mp4", short)
    # the second row's file lasts 0.4 s: under the --min-clip-seconds floor
    _, youtube_id2, start2, end2, *_ = second.split(",")
    tiny = mirror / "abseiling" / f"{youtube_id2}_{int(start2):06d}_{int(end2):06d}.mp4"
    _cut(sample_videos / "cup.mp4", tiny, seconds=0.4)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["build", "--no-ray", "--source", "kinetics", "--annotations", str(annotations)]
        + ["--mirror", str(mirror), "--out", str(out), "--frames-per-clip", "2", "--min-score", "0"],
    )
    assert result.exit_code == 1, result.output  # one row failed (the tiny one)
    rows = {r["source_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    kept = rows[youtube_id]
    assert kept["status"] == "kept" and kept["reason"] is None
    assert kept["start_s"] == 0.0 and abs(kept["end_s"] - decode_clip(short).duration_s) < 0.01
    assert 7.5 < kept["end_s"] < 9.5 and (kept["source_start_s"], kept["source_end_s"]) == (417.0, 427.0)
    assert "shorter than its segment" in kept["detail"] and kept["frames_sampled"] == 2
    assert (rows[youtube_id2]["status"], rows[youtube_id2]["reason"]) == ("failed", "too_short")
    assert "--min-clip-seconds 1" in rows[youtube_id2]["detail"]


def _cut(src: Path, dest: Path, seconds: float) -> None:
    """The first ``seconds`` of ``src`` re-encoded with PyAV (a real, complete, very short mp4)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dest), "w") as outp:
        stream_in = inp.streams.video[0]
        stream = outp.add_stream("libx264", rate=stream_in.average_rate)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame in inp.decode(stream_in):
            if frame.time > seconds:
                break
            for packet in stream.encode(frame.reformat(width=160, height=120, format="yuv420p")):
                outp.mux(packet)
        for packet in stream.encode():
            outp.mux(packet)
