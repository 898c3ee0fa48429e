"""`vito-eval probe` end to end on a real MNIST subset, and its exit status 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from vito_eval.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def mnist_spec(samples_dir: Path) -> str:
    return f"mnist-csv:{samples_dir / 'mnist-5k' / 'mnist_5k.csv.gz'}"


@pytest.mark.slow
def test_probe_two_encoders_side_by_side(mnist_spec: str, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    args = [
        "probe",
        "--encoder",
        "random:resnet18",
        "--encoder",
        "efficientnet-lite0",
        "--dataset",
        mnist_spec,
        "--train-limit",
        "200",
        "--test-limit",
        "100",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "c"),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["dataset"]["train_size"] == 200 and payload["dataset"]["test_size"] == 100
    by_name = {r["encoder"]: r for r in payload["results"]}
    assert set(by_name) == {"random:resnet18", "efficientnet-lite0"}
    assert (
        by_name["random:resnet18"]["feature_dim"] == 512
        and by_name["efficientnet-lite0"]["feature_dim"] == 1280
    )
    for r in payload["results"]:
        assert r["linear"]["top1"] > 0.3 and r["knn"]["k20"]["top1"] > 0.3  # chance is 0.1
        assert r["linear"]["top5"] >= r["linear"]["top1"] and "top5" not in r["knn"]["k1"]
        assert len(r["linear"]["per_class"]) == 10 and sum(map(sum, r["linear"]["confusion"])) == 100
        assert (tmp_path / r["confusion_png"]).stat().st_size > 1000
        assert not r["timing"]["train_from_cache"]
    assert "random:resnet18" in result.output and "efficientnet-lite0" in result.output

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    rerun = {r["encoder"]: r for r in json.loads(out.read_text())["results"]}
    assert all(r["timing"]["train_from_cache"] and r["timing"]["test_from_cache"] for r in rerun.values())
    assert rerun["random:resnet18"]["linear"]["top1"] == by_name["random:resnet18"]["linear"]["top1"]
    assert "cached" in again.output


def _wrong_arch_weights(tmp_path: Path) -> str:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return f"torchvision:resnet50:{path}"


@pytest.mark.parametrize(
    ("encoder", "dataset", "message"),
    [
        ("random:resnet18", "cifar:/tmp/x", "unknown dataset kind 'cifar'"),
        ("random:resnet18", "imagefolder:/no/such/dir", "/no/such/dir"),
        ("what:ever", "MNIST", "unknown encoder 'what:ever'"),
        ("WRONG_ARCH", "MNIST", "r18.pth"),
    ],
)
def test_bad_input_exits_2_without_traceback(
    encoder: str, dataset: str, message: str, mnist_spec: str, tmp_path: Path
) -> None:
    encoder = _wrong_arch_weights(tmp_path) if encoder == "WRONG_ARCH" else encoder
    dataset = mnist_spec if dataset == "MNIST" else dataset
    result = runner.invoke(app, ["probe", "-e", encoder, "-d", dataset, "--no-cache", "--train-limit", "20"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_undecodable_image_is_named_and_exits_2(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
            for i in range(2):
                (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20, 20), colour).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "b" / "corrupt.png").write_bytes(b"\x89PNG but not really")
    result = runner.invoke(
        app,
        [
            "probe",
            "-e",
            "random:resnet18",
            "-d",
            f"imagefolder:{tmp_path}",
            "--image-size",
            "32",
            "--no-cache",
        ],
    )
    assert result.exit_code == 2
    assert "corrupt.png" in result.output and "Traceback" not in result.output
