"""A real manifest of the sample videos (all kept, arbitrary labels) for the trainer's tests."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from videonet_curate.manifest import empty_row, rows_to_table, write_manifest


def _relative_or_absolute(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path.resolve())


def link_sample_manifest(sample_videos: Path, root: Path, names: list[str]) -> Path:
    """``root/videos`` with links to the named sample videos, and the manifest of them in ``root``."""
    videos = root / "videos"
    videos.mkdir()
    for name in names:
        (videos / name).symlink_to(sample_videos / name)
    return write_sample_manifest(videos, root)


def write_sample_manifest(videos: Path, out_dir: Path, names: list[str] | None = None) -> Path:
    """manifest.parquet in ``out_dir`` with one kept row per sample video (path relative to it)."""
    rows = []
    files = sorted(p for p in videos.iterdir() if p.is_file() and (names is None or p.name in names))
    for label, path in enumerate(files):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = (
                float(stream.duration * stream.time_base)
                if stream.duration
                else float(container.duration or 0) / 1e6
            )
        rows.append(
            empty_row(
                clip_id=path.stem,
                source="local",
                source_id=path.name,
                path=_relative_or_absolute(path, out_dir),
                start_s=0.0,
                end_s=max(duration - 0.1, 0.2),
                status="kept",
                label=label,
                label_name=path.stem,
                score=1.0,
                duration_s=duration,
            )
        )
    return write_manifest(rows_to_table(rows), out_dir / "manifest.parquet")


@pytest.fixture(scope="session")
def sample_manifest(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest whose paths are relative to its directory (videos symlinked beside it)."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "videos").mkdir()
    for video in sorted(sample_videos.iterdir()):
        (root / "videos" / video.name).symlink_to(video)
    return write_sample_manifest(root / "videos", root)


SMOKE_OVERRIDES = [
    "max_steps=40",
    "image_size=64",
    "batch_size=8",
    "decode_short_side=96",
    "num_workers=2",
    "projector_hidden=256",
    "predictor_hidden=256",
    "ckpt_every=20",
]


@pytest.fixture(scope="session")
def smoke_run(sample_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`vito-train run --preset cpu-smoke` for 40 steps on the sample clips (tiny images, batch 8)."""
    from typer.testing import CliRunner

    from vito_train.cli import app

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    args = [
        "run",
        "--manifest",
        str(sample_manifest),
        "--out",
        str(run_dir),
        "--preset",
        "cpu-smoke",
        "--no-progress",
    ]
    for item in SMOKE_OVERRIDES:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run_dir
