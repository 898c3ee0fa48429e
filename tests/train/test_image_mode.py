"""Image mode (`vito-train run --images`, `prepare --images`): views, label-free batches, learning,
exact resume, and bad input (video-only option, empty folder, unreadable image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vito_train.checkpoint import load_checkpoint
from vito_train.cli import app
from vito_train.config import resolve_config
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch
from vito_train.data.image_sets import load_image_set
from vito_train.data.image_source import ImageFrameSource
from vito_train.loop import train
from vito_train.metrics import read_metrics

TINY = [
    "image_size=32",
    "batch_size=8",
    "projector_hidden=64",
    "predictor_hidden=64",
    "projector_dim=32",
    "attention_hidden=16",
    "warmup_steps=2",
    "ckpt_last_every=1",
    "num_workers=0",
    "log_every=1",
]


@pytest.fixture(scope="module")
def fashion_spec(samples_dir: Path) -> str:
    path = samples_dir / "fashion-mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST missing under {path}: run `videonet-curate samples fetch`")
    return f"fashion-mnist:{path}"


def colour_folder(root: Path, n_per_class: int = 4, size: int = 24) -> Path:
    """Class folders of flat-coloured PNGs, every image its own colour."""
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            colour = np.array([40 + 50 * i, 200 - 60 * c, 30 * (i + c)], dtype=np.uint8)
            Image.fromarray(np.broadcast_to(colour, (size, size + 6, 3)).copy()).save(
                root / f"class{c}" / f"{i}.png"
            )
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, [*args, "--no-progress"] if args[0] == "run" else list(args))


def test_image_pairs_are_two_views_of_one_image_and_batches_hold_no_labels(tmp_path: Path) -> None:
    images = load_image_set(f"imagefolder:{colour_folder(tmp_path / 'set')}")
    source = ImageFrameSource(images)
    assert len(source) == 8
    dataset = FramePairDataset(source, seed=0, image_size=16, min_scale=0.5, photometric=True)
    samples = [dataset[g] for g in range(8)]
    for s in samples:  # crop + flip only: each view is a crop of one flat-coloured image
        assert s["view_1"].shape == (3, 16, 16) and s["view_1"].dtype == torch.uint8
        assert torch.equal(s["view_1"], s["view_2"])
    colours = {tuple(s["view_1"][:, 0, 0].tolist()) for s in samples}
    assert len(colours) == 8  # one epoch visits every image once
    batch = collate_pair_batch(samples)
    assert set(batch) == {"view_1", "view_2", "failed", "dropped", "photometric"}
    assert batch["view_1"].shape == (8, 3, 16, 16) and batch["photometric"].shape[:2] == (2, 8)
    # with the photometric augmentation in the workers, the two views of one image differ
    full = FramePairDataset(source, seed=0, image_size=16, min_scale=0.5)[0]
    assert not torch.equal(full["view_1"], full["view_2"])


def test_image_mode_run_learns_exports_and_resumes_exactly(fashion_spec: str, tmp_path: Path) -> None:
    """The done-when command (shorter), then an interrupted run resumed equals an uninterrupted one."""
    run = tmp_path / "run"
    args = ["run", "--images", fashion_spec, "--out", str(run), "--preset", "cpu-smoke"]
    overrides = [*TINY, "batch_size=16", "max_steps=30", "base_lr=24", "ckpt_every=0"]
    overrides += ["monitor_every=10", "monitor_bank=100", "monitor_queries=50"]
    result = invoke(*args, "--monitor", fashion_spec, *[x for o in overrides for x in ("--set", o)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "monitor_share" in result.output
    knn = [(r["step"], r["knn20_top1"]) for r in read_metrics(run) if "knn20_top1" in r]
    assert [step for step, _ in knn] == [0, 10, 20, 30]
    assert all(20 < top1 <= 100 for _, top1 in knn)  # 10 classes: chance is 10%
    assert (run / "loss.png").is_file()
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"image-mode loss: first-5 mean {first:.3f}, last-5 mean {last:.3f}")
    assert last < first - 0.3, losses
    assert resolve_config(run / "config.yaml").max_gap_s == 0.0  # two views of one image
    result = invoke("export", str(run), "--out", str(tmp_path / "encoder.safetensors"))
    assert result.exit_code == 0 and (tmp_path / "encoder.safetensors").stat().st_size > 1e6

    whole = resolve_config("cpu-smoke", [*TINY, "max_steps=5"])
    train(whole, None, tmp_path / "whole", images=fashion_spec)
    train(
        resolve_config("cpu-smoke", [*TINY, "max_steps=5", "stop_after=2"]),
        None,
        tmp_path / "split",
        images=fashion_spec,
    )
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 2
    train(whole, None, tmp_path / "split", images=fashion_spec)
    a, b = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa, wb = (load_checkpoint(p / "last.pt") for p in (tmp_path / "whole", tmp_path / "split"))
    for key in wa["online"]:
        assert torch.equal(wa["online"][key], wb["online"][key]), key


def test_bad_image_input_is_a_clear_error_or_a_counted_skip(tmp_path: Path) -> None:
    folder = colour_folder(tmp_path / "set")
    base = ["run", "--images", f"imagefolder:{folder}", "--preset", "cpu-smoke"]
    sets = [x for o in [*TINY, "batch_size=4", "max_steps=2"] for x in ("--set", o)]

    result = invoke(*base, "--out", str(tmp_path / "r1"), *sets, "--set", "max_gap_s=0.5")
    assert result.exit_code == 2 and "max_gap_s applies to video only" in result.output
    assert not (tmp_path / "r1").exists()

    (tmp_path / "empty" / "cls").mkdir(parents=True)
    result = invoke(
        *base[:2], f"imagefolder:{tmp_path / 'empty'}", *base[3:], "--out", str(tmp_path / "r2"), *sets
    )
    assert result.exit_code == 2 and "no images" in result.output

    (folder / "class1" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    run = tmp_path / "r3"
    result = invoke(*base, "--out", str(run), *sets, "--set", "batch_size=9")  # one epoch + 1 per step
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [r for r in read_metrics(run) if "loss" in r]
    assert rows[-1]["failed_clips"] >= 1 and rows[-1]["dropped_samples"] == 0  # skipped, replaced

    # the same folder through a frame cache: the broken image is a counted skip of prepare
    cache = tmp_path / "cache"
    result = invoke("prepare", "--images", f"imagefolder:{folder}", "--out", str(cache), "--workers", "1")
    assert result.exit_code == 1, result.output  # the contract's "done, some work skipped"
    summary = json.loads((cache / "summary.json").read_text())
    assert summary["clips"] == 8 and len(summary["clip_failures"]) == 1
    assert "broken.jpg" in summary["clip_failures"][0]["reason"]
    result = invoke(
        "run", "--cache", str(cache), "--out", str(tmp_path / "r4"), "--preset", "cpu-smoke", *sets
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
