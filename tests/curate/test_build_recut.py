"""A finished build re-cut with another --min-score (and --batch-frames): no model, a new manifest."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from videonet_curate import manifest as mf
from videonet_curate.build import BuildOptions, build
from videonet_curate.curation import CurationOptions
from videonet_curate.labeling import LabelingConfig, ShardLabeler


def _options(input_dir: Path, out: Path, min_score: float, batch_frames: int) -> BuildOptions:
    return BuildOptions(
        source="local",
        out_dir=out,
        input_path=input_dir,
        labeling=LabelingConfig(frames_per_clip=2, batch_frames=batch_frames, threads=1),
        curation=CurationOptions(min_score=min_score),
        use_ray=False,
    )


def test_changing_min_score_recuts_without_the_model(
    tmp_path: Path, sample_videos: Path, monkeypatch, one_torch_thread
) -> None:
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    shutil.copy(sample_videos / "realshort.mp4", input_dir / "realshort.mp4")
    out = tmp_path / "out"
    started = time.perf_counter()
    first = build(_options(input_dir, out, min_score=0.0, batch_frames=4))
    first_s = time.perf_counter() - started
    assert first.summary["status_counts"]["kept"] == first.summary["rows"] == 1
    assert first.summary["shards"]["skipped_as_done"] == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the re-cut loaded or ran the model")

    monkeypatch.setattr("videonet_curate.models.load_scorer", no_model)
    monkeypatch.setattr(ShardLabeler, "run_shard", no_model)
    started = time.perf_counter()
    second = build(_options(input_dir, out, min_score=1.0, batch_frames=64))
    recut_s = time.perf_counter() - started
    assert second.summary["shards"]["skipped_as_done"] == second.summary["shards"]["total"] == 1
    rows = mf.read_manifest(out / mf.MANIFEST_FILENAME).to_pylist()
    assert [r["status"] for r in rows] == ["low_score"]
    assert all("< --min-score 1.0" in r["detail"] for r in rows)
    # the labels of the first build, untouched
    assert {r["clip_id"]: r["score"] for r in rows} == {
        r["clip_id"]: r["score"] for r in first.table.to_pylist()
    }
    assert mf.read_metadata(out / mf.MANIFEST_FILENAME)["config"]["curation"]["min_score"] == 1.0
    assert recut_s < first_s, (recut_s, first_s)
