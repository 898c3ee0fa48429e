"""UCF-101: official split parsing, frame selection and PyAV decoding, probe end to end, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import UCF_FIXTURE_CLASSES, write_clip_avi, write_ucf101_fixture
from typer.testing import CliRunner

from vito_eval.action import Ucf101Config, decode_frames, frame_indices, run_ucf101
from vito_eval.cli import app
from vito_eval.datasets.ucf101 import Ucf101LayoutError, read_split


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, samples_dir):
    return write_ucf101_fixture(tmp_path_factory.mktemp("ucf"), samples_dir)


def test_split_files_parse_as_the_official_ones(ucf):
    split = read_split(ucf.videos_root, ucf.splits_dir, 1)
    assert split.classes == list(UCF_FIXTURE_CLASSES)
    assert len(split.train) == ucf.n_train == 18 and len(split.test) == ucf.n_test == 6
    assert split.test[0] == ("Biking/v_Biking_g01_c01.avi", 0)  # 1-based classInd ids become 0-based
    assert all("_g01_" not in rel for rel, _ in split.train)  # groups never straddle train and test
    line = (ucf.splits_dir / "trainlist01.txt").read_text().splitlines()[0]
    assert line == "Biking/v_Biking_g02_c01.avi 1"  # the official line format


def test_layout_errors_name_what_is_expected(ucf, tmp_path):
    with pytest.raises(Ucf101LayoutError, match="classInd.txt"):
        read_split(ucf.videos_root, tmp_path, 1)
    with pytest.raises(Ucf101LayoutError, match="split must be 1, 2 or 3"):
        read_split(ucf.videos_root, ucf.splits_dir, 4)
    with pytest.raises(Ucf101LayoutError, match="none of the listed videos exist"):
        read_split(tmp_path, ucf.splits_dir, 1)


def test_frame_indices():
    assert frame_indices(9, "middle", 8) == [4]
    assert frame_indices(10, "middle", 8) == [5]
    assert frame_indices(16, "average", 4) == [2, 6, 10, 14]  # segment centres
    assert frame_indices(3, "average", 8) == [0, 1, 2]  # never more frames than the clip has


def test_decoding_picks_the_right_frames(tmp_path):
    # Frame i is a flat grey of level 20*i: after the MPEG-4 round trip the level says which frame came back.
    frames = [np.full((48, 64, 3), 20 * i, dtype=np.uint8) for i in range(9)]
    path = tmp_path / "Ramp" / "v_Ramp_g01_c01.avi"
    write_clip_avi(path, frames)
    (middle,) = decode_frames(path, "middle", 1)
    assert abs(np.asarray(middle).mean() - 80) < 4
    levels = [np.asarray(f).mean() for f in decode_frames(path, "average", 3)]
    np.testing.assert_allclose(levels, [20, 80, 140], atol=4)  # frames 1, 4, 7


def test_probe_on_the_fixture_beats_chance_and_writes_results(ucf, tmp_path):
    config = Ucf101Config(
        encoder="random:resnet18",
        root=ucf.videos_root,
        splits=ucf.splits_dir,
        out=tmp_path,
        image_size=64,
        l2_grid=(1e-2,),
    )
    result = run_ucf101(config)
    assert result["train_clips"] == 18 and result["test_clips"] == 6 and result["failed"] == {}
    # Six classes cut from six different real videos: even random conv features separate most of them.
    assert result["top1"] > 0.5
    assert result["top5"] >= result["top1"]
    written = json.loads((tmp_path / "ucf101-split1.json").read_text())
    assert written["top1"] == result["top1"] and written["clip_feature"] == "middle frame"
    assert (tmp_path / "ucf101-split1.confusion.png").is_file()


def test_a_broken_video_is_recorded_and_the_run_goes_on(ucf, tmp_path):
    broken = ucf.videos_root / "Cockatoo" / "v_Cockatoo_g03_c01.avi"
    original = broken.read_bytes()
    try:
        broken.write_bytes(b"not a video")
        config = Ucf101Config(
            encoder="random:resnet18",
            root=ucf.videos_root,
            splits=ucf.splits_dir,
            image_size=48,
            l2_grid=(1e-2,),
            frames="average",
            n_frames=2,
        )
        result = run_ucf101(config)
    finally:
        broken.write_bytes(original)
    assert list(result["failed"]) == ["Cockatoo/v_Cockatoo_g03_c01.avi"]
    assert result["train_clips"] == 17


def test_cli_commands_report_layout_errors_without_a_traceback(tmp_path):
    runner = CliRunner()
    for args in (
        ["davis", "-e", "random:resnet18", "--root", str(tmp_path), "--out", str(tmp_path / "o")],
        ["ucf101", "-e", "random:resnet18", "--root", str(tmp_path), "--splits", str(tmp_path)],
        ["segment", "-e", "random:resnet18", "--dataset", f"voc:{tmp_path}"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "expected" in result.output and "Traceback" not in result.output


def test_cli_ucf101_on_the_fixture(ucf, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "ucf101",
            "-e",
            "random:resnet18",
            "--root",
            str(ucf.videos_root),
            "--splits",
            str(ucf.splits_dir),
            "--out",
            str(tmp_path),
            "--image-size",
            "48",
            "--limit-per-class",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output
    assert json.loads((tmp_path / "ucf101-split1.json").read_text())["train_clips"] == 12
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_clip_features_are_cached_and_reused(ucf, tmp_path):
    config = Ucf101Config(
        encoder="random:resnet18",
        root=ucf.videos_root,
        splits=ucf.splits_dir,
        image_size=48,
        l2_grid=(1e-2,),
        limit_per_class=2,
        cache_dir=tmp_path / "cache",
    )
    first = run_ucf101(config)
    assert first["timing"]["from_cache"] == {"train": False, "test": False}
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    second = run_ucf101(config)
    assert second["timing"]["from_cache"] == {"train": True, "test": True}
    assert second["top1"] == first["top1"] and second["linear"]["confusion"] == first["linear"]["confusion"]
    config.image_size = 40  # another transform is another entry
    assert run_ucf101(config)["timing"]["from_cache"] == {"train": False, "test": False}
