"""Segmentation transfer on VOC- and ADE20K-layout fixtures: layouts, label coding, heads, mIoU end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import write_ade20k_fixture, write_voc_fixture
from PIL import Image

from vito_eval.datasets import load_segmentation_dataset
from vito_eval.datasets.ade20k import ADE20K_CLASSES
from vito_eval.datasets.segmentation import SegmentationLayoutError
from vito_eval.segmentation import SegmentationConfig, run_segmentation, sample_pixel_features


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def voc(tmp_path_factory, samples_dir):
    return write_voc_fixture(tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012", samples_dir)


@pytest.fixture(scope="module")
def ade(tmp_path_factory, samples_dir):
    return write_ade20k_fixture(tmp_path_factory.mktemp("ade") / "ADEChallengeData2016", samples_dir)


def oracle_dense(fixture, image_paths, stride=16):
    """'Perfect' features: one-hot of the pasted region's class per 16-px cell, found by image matching."""
    ids = list(fixture.regions)
    images = np.stack([np.asarray(Image.open(image_paths[i]).convert("RGB"), dtype=np.float32) for i in ids])
    classes = sorted({int(c) for r in fixture.regions.values() for c in np.unique(r)})
    lut = np.zeros(256, dtype=np.int64)
    lut[classes] = np.arange(len(classes))

    def dense(x: torch.Tensor) -> torch.Tensor:
        out = []
        for image in x.permute(0, 2, 3, 1).numpy().astype(np.float32):
            region = fixture.regions[ids[int(np.abs(images - image).mean(axis=(1, 2, 3)).argmin())]]
            onehot = F.one_hot(torch.from_numpy(lut[region]), len(classes)).permute(2, 0, 1).float()
            out.append(F.avg_pool2d(onehot[None], stride)[0])
        return torch.stack(out)

    return dense


def voc_image_paths(fx):
    return {i: fx.root / "JPEGImages" / f"{i}.jpg" for i in fx.regions}


def ade_image_paths(fx):
    return {
        i: fx.root / "images" / ("training" if i in fx.train_ids else "validation") / f"{i}.jpg"
        for i in fx.regions
    }


def test_layouts_and_label_coding(voc, ade):
    v = load_segmentation_dataset(f"voc:{voc.root.parent.parent}")  # the VOCdevkit parent is accepted too
    assert v.num_classes == 21 and len(v.train) == 8 and len(v.val) == 4
    lab = v.read_label(v.val[0][1])
    np.testing.assert_array_equal(lab, voc.labels[voc.val_ids[0]])  # VOC: indices as stored, 255 kept
    a = load_segmentation_dataset(f"ade20k:{ade.root}")
    assert a.num_classes == 150 and a.class_names[12] == "person"
    raw = ade.labels[ade.val_ids[0]]
    lab = a.read_label(a.val[0][1])
    assert (lab[raw == 0] == 255).all()  # 'other' is ignored
    np.testing.assert_array_equal(lab[raw > 0], raw[raw > 0] - 1)  # classes 1..150 -> 0..149


def test_wrong_layouts_name_what_is_expected(tmp_path):
    with pytest.raises(SegmentationLayoutError, match="ImageSets/Segmentation"):
        load_segmentation_dataset(f"voc:{tmp_path}")
    with pytest.raises(SegmentationLayoutError, match=r"images/\{training,validation\}"):
        load_segmentation_dataset(f"ade20k:{tmp_path}")
    with pytest.raises(SegmentationLayoutError, match="voc:ROOT or ade20k:ROOT"):
        load_segmentation_dataset(f"coco:{tmp_path}")


def test_pixel_sampling_equals_full_bilinear_upsampling():
    feats = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(0))  # not the global RNG's state
    label = np.zeros((13, 19), dtype=np.uint8)
    label[0, :] = 255
    x, y = sample_pixel_features(feats, label, 1000, np.random.default_rng(0))
    full = F.interpolate(feats[None], size=label.shape, mode="bilinear", align_corners=False)[0]
    ys, xs = np.nonzero(label != 255)
    assert len(y) == len(ys)  # every labelled pixel, none of the void ones
    expected = {(int(a), int(b)): full[:, a, b].numpy() for a, b in zip(ys, xs, strict=True)}
    got = sorted(map(tuple, np.round(x, 5)))
    want = sorted(map(tuple, np.round(np.stack(list(expected.values())), 5)))
    # rounding to 5 decimals (to pair the rows up) may itself move two equal values 1e-5 apart
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-5)


def test_oracle_features_with_the_linear_probe_on_voc(voc, tmp_path):
    config = SegmentationConfig(
        encoder="oracle",
        dataset=f"voc:{voc.root}",
        out=tmp_path,
        head="linear",
        image_size=96,
        pixels_per_image=64,
        l2_grid=(1e-4,),
        probe_max_iter=100,
    )
    result = run_segmentation(config, dense=oracle_dense(voc, voc_image_paths(voc)))
    # Cells are pure and separable; only pixels next to region edges can go wrong (bilinear logits of
    # classes with different logit scales), and VOC's 2-px void band hides most of those.
    assert result["miou"] > 0.99
    present = {k for k, v in result["per_class_iou"].items() if v is not None}
    assert all(result["per_class_iou"][k] > 0.98 for k in present)
    assert "background" in present and present <= {"background", "bicycle", "bird", "person"}
    written = json.loads((tmp_path / "segmentation-voc.json").read_text())
    assert written["miou"] == result["miou"]
    assert (tmp_path / "voc-per-class-iou.png").is_file()
    assert len(list(tmp_path.glob("voc-*-image-gt-pred.png"))) == 4


def test_oracle_features_with_the_conv_head_on_voc(voc, tmp_path):
    config = SegmentationConfig(
        encoder="oracle",
        dataset=f"voc:{voc.root}",
        out=tmp_path,
        head="conv",
        image_size=96,
        epochs=15,
        lr=0.1,
    )
    result = run_segmentation(config, dense=oracle_dense(voc, voc_image_paths(voc)))
    assert result["miou"] > 0.95


def test_oracle_features_with_the_linear_probe_on_ade20k(ade, tmp_path):
    config = SegmentationConfig(
        encoder="oracle",
        dataset=f"ade20k:{ade.root}",
        out=tmp_path,
        head="linear",
        image_size=96,
        pixels_per_image=64,
        l2_grid=(1e-4,),
        probe_max_iter=100,
    )
    result = run_segmentation(config, dense=oracle_dense(ade, ade_image_paths(ade)))
    assert result["miou"] > 0.9  # no void band in ADE20K: pixels at region edges count against it
    present = {k for k, v in result["per_class_iou"].items() if v is not None}
    assert present <= {"tree", "person", "car"}  # 'other' (0) is ignored, never a class


def test_random_resnet18_runs_both_heads(voc, tmp_path):
    for head in ("linear", "conv"):
        config = SegmentationConfig(
            encoder="random:resnet18",
            dataset=f"voc:{voc.root}",
            out=tmp_path / head,
            head=head,
            stage=3,
            image_size=96,
            pixels_per_image=32,
            l2_grid=(1e-2,),
            probe_max_iter=50,
            epochs=3,
        )
        result = run_segmentation(config)
        assert result["feature_shape"] == [256, 6, 6]
        assert 0.0 <= result["miou"] <= 1.0


def test_cli_segment_on_the_ade20k_fixture(ade, tmp_path):
    from typer.testing import CliRunner

    from vito_eval.cli import app

    result = CliRunner().invoke(
        app,
        [
            "segment",
            "-e",
            "random:resnet18",
            "--dataset",
            f"ade20k:{ade.root}",
            "--out",
            str(tmp_path),
            "--head",
            "conv",
            "--epochs",
            "2",
            "--stage",
            "3",
            "--image-size",
            "64",
            "--val-limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    written = json.loads((tmp_path / "segmentation-ade20k.json").read_text())
    assert written["val_images"] == 2 and written["head"] == "conv"
    assert set(written["per_class_iou"]) == set(ADE20K_CLASSES)
