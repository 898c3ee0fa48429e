"""DAVIS-2017 propagation end to end on a fixture in the official layout built from real video textures."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import write_davis_fixture
from PIL import Image

from vito_eval.datasets.davis import DavisLayoutError, list_sequences
from vito_eval.davis import DavisRunConfig, run_davis
from vito_eval.propagation import PRESETS


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def davis(tmp_path_factory, samples_dir):
    return write_davis_fixture(tmp_path_factory.mktemp("davis") / "DAVIS", samples_dir)


def oracle_features(fixture, stride=8):
    """'Perfect' features: the one-hot label of each stride-8 cell, found by matching the frame."""
    frames = np.concatenate([fixture.frames[s] for s in fixture.sequences]).astype(np.float32)
    labels = np.concatenate([fixture.labels[s] for s in fixture.sequences])
    n_labels = int(labels.max()) + 1

    def features(images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.permute(0, 2, 3, 1).numpy().astype(np.float32):
            index = int(np.abs(frames - image).mean(axis=(1, 2, 3)).argmin())  # JPEG noise << object motion
            onehot = F.one_hot(torch.from_numpy(labels[index]).long(), n_labels).permute(2, 0, 1).float()
            out.append(F.avg_pool2d(onehot[None], stride)[0])
        return torch.stack(out)

    return features


def test_fixture_is_in_the_official_layout(davis):
    seqs = list_sequences(davis.root)
    assert [s.name for s in seqs] == ["cockatoo-bikes", "city-box"]
    assert all(len(s.frames) == len(s.annotations) == 6 for s in seqs)
    with Image.open(seqs[0].annotations[0]) as im:
        assert im.mode == "P"
        assert set(np.unique(np.array(im))) == {0, 1, 2}


def test_oracle_features_give_the_hand_computed_scores(davis, tmp_path):
    result = run_davis(oracle_features(davis), DavisRunConfig(root=davis.root, out=tmp_path), PRESETS["crw"])
    assert result["failed"] == {}
    # Propagation is exact at feature resolution; bilinear upsampling + argmax (the CRW protocol) then
    # rounds every rectangle corner by 3+2+1 pixels, so J = 1 - 24 / area for each object on every frame.
    expected_j = {
        "cockatoo-bikes_1": 1 - 24 / (24 * 16),
        "cockatoo-bikes_2": 1 - 24 / (16 * 16),
        "city-box_1": 1 - 24 / (16 * 24),
    }
    with open(tmp_path / "per-sequence-results.csv") as fh:
        rows = {r["Sequence"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(expected_j)
    for name, j in expected_j.items():
        assert float(rows[name]["J-Mean"]) == pytest.approx(j, abs=1e-6)
        assert float(rows[name]["J-Recall"]) == 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["j_mean"] == pytest.approx(np.mean(list(expected_j.values())))
    assert summary["metrics"]["n_objects"] == 3
    assert 0.8 < summary["metrics"]["f_mean"] < 1.0
    for seq in davis.sequences:  # predictions: palette PNGs in the DAVIS layout, one per frame
        pngs = sorted((tmp_path / "predictions" / seq).glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(6)]
        with Image.open(pngs[3]) as im:
            assert im.mode == "P"
            wrong = np.array(im) != davis.labels[seq][3]
        assert wrong.sum() == 24 * (int(davis.labels[seq].max()))  # only the rounded corners differ
    assert list((tmp_path / "overlays").glob("*.png"))
    assert (tmp_path / "per-sequence-jf.png").stat().st_size > 0


def test_shuffled_features_score_lower(davis, tmp_path):
    oracle = oracle_features(davis)

    def scrambled(images):
        f = oracle(images)
        return f[..., torch.randperm(f.shape[-1], generator=torch.Generator().manual_seed(0))]

    result = run_davis(scrambled, DavisRunConfig(root=davis.root, out=tmp_path), PRESETS["crw"])
    assert result["metrics"]["j_mean"] < 0.8


def test_random_resnet18_at_stride_8_runs(davis, tmp_path):
    from vito_eval.encoders import load_encoder

    enc = load_encoder("random:resnet18")
    feature_fn = lambda x: enc.dense(x, stage=3, output_stride=8)  # noqa: E731
    assert feature_fn(torch.zeros(1, 3, 64, 96, dtype=torch.uint8)).shape == (1, 256, 8, 12)
    result = run_davis(
        feature_fn, DavisRunConfig(root=davis.root, out=tmp_path), PRESETS["vfs"], encoder_name="random"
    )
    assert 0.0 <= result["metrics"]["jf_mean"] <= 1.0
    assert result["propagation"]["temperature"] == 0.07


def test_layout_errors_name_what_is_expected(davis, tmp_path):
    with pytest.raises(DavisLayoutError, match=r"ImageSets/2017/val.txt"):
        list_sequences(tmp_path)
    broken = tmp_path / "DAVIS"
    shutil.copytree(davis.root, broken)
    (broken / "ImageSets" / "2017" / "val.txt").write_text("cockatoo-bikes\nmissing-seq\n")
    with pytest.raises(DavisLayoutError, match=r"missing-seq.*JPEGImages/480p"):
        list_sequences(broken)


def test_a_bad_sequence_is_recorded_and_the_run_goes_on(davis, tmp_path):
    broken = tmp_path / "DAVIS"
    shutil.copytree(davis.root, broken)
    first = broken / "Annotations" / "480p" / "city-box" / "00000.png"
    Image.open(first).convert("RGB").save(first)  # not an indexed PNG any more
    result = run_davis(
        oracle_features(davis), DavisRunConfig(root=broken, out=tmp_path / "out"), PRESETS["crw"]
    )
    assert list(result["failed"]) == ["city-box"]
    assert "indexed-palette" in result["failed"]["city-box"]
    assert result["sequences"] == ["cockatoo-bikes"]


def test_cli_davis_on_the_fixture_with_overrides(davis, tmp_path):
    from typer.testing import CliRunner

    from vito_eval.cli import app

    result = CliRunner().invoke(
        app,
        [
            "davis",
            "-e",
            "random:resnet18",
            "--root",
            str(davis.root),
            "--out",
            str(tmp_path),
            "--preset",
            "vfs",
            "--topk",
            "5",
            "--radius",
            "6",
            "--sequence",
            "city-box",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "J&F" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["propagation"] == {
        "n_context": 20,
        "topk": 5,
        "radius": 6.0,
        "temperature": 0.07,
        "query_chunk": 1024,
        "tile": 8,
    }
    assert summary["sequences"] == ["city-box"] and summary["stage"] == 3 and summary["output_stride"] == 8


def test_non_resnet_encoders_use_their_stride_8_stage():
    from vito_eval.davis import encoder_feature_fn
    from vito_eval.encoders import load_encoder

    enc = load_encoder("random:tf_efficientnet_lite0")  # timm: no stride removal, stage 2 is stride 8
    assert encoder_feature_fn(enc, 3, 8)(torch.zeros(1, 3, 64, 96, dtype=torch.uint8)).shape[-2:] == (8, 12)
