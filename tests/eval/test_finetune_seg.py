"""`vito-eval finetune-seg` on shapes fixtures in VOC and ADE20K layouts: it learns (mIoU above chance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vito_eval.cli import app
from vito_eval.datasets import load_segmentation_dataset
from vito_eval.encoders import load_encoder
from vito_eval.finetune_seg import SEG_SCHEDULES, build_fcn, dilate_resnet, poly_lr
from vito_eval.seg_metrics import confusion_matrix, scores_from_confusion
from vito_eval.shapes import ShapesConfig, write_shapes_dataset

runner = CliRunner()
# Chance is measured in the test: predicting the majority class (background) everywhere scores mIoU 21.0
# on the VOC fixture (IoU 84 for background, 0 for the three shapes). Measured runs of the test's command
# (benchmarks/RESULTS.md, 2026-12-01): mIoU 33.3 at batch 8, output stride 8 (this smoke schedule); 25.4
# at batch 4 and 25.0 at batch 4 / stride 16, too close to chance, which is why the schedule keeps batch 8.
MIOU_MARGIN = 5.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


def finetune(root, layout, out, *extra):
    args = [
        "finetune-seg",
        "--encoder",
        "random:resnet18",
        "--dataset",
        f"{layout}:{root}",
        "--out",
        str(out),
        "--schedule",
        "smoke",
        "--workers",
        "0",
        "--device",
        "cpu",
        *extra,
    ]
    return runner.invoke(app, args)


def majority_class_miou(layout, root) -> float:
    """mIoU of predicting the fixture's background class everywhere (VOC background, ADE20K 'wall')."""
    ds = load_segmentation_dataset(f"{layout}:{root}")
    conf = sum(
        confusion_matrix(np.zeros_like(lab), lab, ds.num_classes)
        for lab in (ds.read_label(p) for _, p in ds.val)
    )
    return 100 * scores_from_confusion(conf).miou


def test_smoke_schedule_learns_voc(tmp_path):
    root = write_shapes_dataset(tmp_path / "data", ShapesConfig("voc", train_images=32, val_images=8, seed=2))
    result = finetune(root, "voc", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    chance = majority_class_miou("voc", root)
    assert metrics["miou"] > chance + MIOU_MARGIN, (chance, metrics)
    iou = metrics["per_class_iou"]
    assert all(iou[c] is not None for c in ("background", "aeroplane", "bicycle", "bird"))
    assert max(iou[c] for c in ("aeroplane", "bicycle", "bird")) > 0  # shapes are found, not only background
    assert (tmp_path / "run" / "per_class_iou.csv").read_text().startswith("class,iou")


def test_ade20k_layout_end_to_end(tmp_path):
    """ADE20K's label coding (0 = other, ignored; k -> k-1) through a short run: scored classes are the
    fixture's, and 'other' pixels never count. (Learning is shown on VOC above: the suite's CPU budget
    holds one learning run.)"""
    root = write_shapes_dataset(
        tmp_path / "data", ShapesConfig("ade20k", train_images=8, val_images=4, seed=2)
    )
    result = finetune(root, "ade20k", tmp_path / "run", "--iterations", "10", "--flip-test")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 100 and metrics["flip_test"] is True
    assert metrics["schedule"]["iterations"] == 10
    iou = metrics["per_class_iou"]
    assert all(iou[c] is not None for c in ("wall", "building", "sky", "floor"))
    assert len(iou) == 150 and "other" not in iou


def test_dilated_trunk_keeps_resolution_and_weights():
    enc = load_encoder("random:resnet18")
    for os_, side in ((8, 16), (16, 8)):
        trunk = dilate_resnet(enc.model, os_)
        x = torch.zeros(1, 3, 128, 128)
        x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
        x = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))
        assert x.shape[-1] == side
        assert torch.equal(trunk.layer4[1].conv2.weight, enc.model.layer4[1].conv2.weight)
    model = build_fcn(enc, 21, 8)
    out = model(torch.zeros(2, 3, 64, 64))
    assert out["out"].shape == out["aux"].shape == (2, 21, 64, 64)


def test_poly_schedule_matches_mmseg():
    s = SEG_SCHEDULES["voc-20k"]
    assert (s.lr, s.iterations, s.crop, s.batch_size, s.weight_decay) == (0.01, 20_000, 512, 16, 5e-4)
    assert poly_lr(0, s) == pytest.approx(0.01)
    assert poly_lr(10_000, s) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert SEG_SCHEDULES["ade20k-80k"].iterations == 80_000


def test_non_resnet_encoder_is_refused(tmp_path):
    root = write_shapes_dataset(tmp_path / "d", ShapesConfig("voc", train_images=2, val_images=1))
    result = runner.invoke(
        app,
        ["finetune-seg", "-e", "random:mobilenet_v3_small", "-d", f"voc:{root}", "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "ResNet" in result.output and not (tmp_path / "o").exists()
