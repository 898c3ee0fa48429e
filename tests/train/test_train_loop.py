"""End-to-end training on the real sample clips: falling loss, exact resume, clear NaN stop."""

import json

import pytest
import torch

from vito_train.checkpoint import load_checkpoint
from vito_train.config import ConfigError, resolve_config
from vito_train.loop import NonFiniteLossError, train
from vito_train.metrics import read_metrics

pytestmark = pytest.mark.slow

TINY = [
    "image_size=48",
    "batch_size=4",
    "decode_short_side=64",
    "projector_hidden=64",
    "predictor_hidden=64",
    "projector_dim=32",
    "attention_hidden=16",
    "max_steps=6",
    "warmup_steps=2",
    "ckpt_last_every=1",
]


def test_smoke_run_loss_falls_and_writes_the_run_directory(smoke_run):
    rows = read_metrics(smoke_run)
    assert [r["step"] for r in rows] == list(range(1, 41))
    losses = [r["loss"] for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(
        f"smoke loss: first-5 mean {first:.3f}, last-5 mean {last:.3f}; pairs/s {rows[-1]['pairs_per_s']:.2f}"
    )
    assert last < first - 0.3, losses
    for name in ("last.pt", "step-00000020.pt", "step-00000040.pt", "config.yaml", "loss.png"):
        assert (smoke_run / name).is_file(), name
    assert list((smoke_run / "tb").glob("events.out.tfevents.*"))
    assert load_checkpoint(smoke_run / "last.pt")["data_position"] == 40 * 8
    assert resolve_config(smoke_run / "config.yaml").max_steps == 40


def test_resume_reproduces_an_uninterrupted_run(sample_manifest, tmp_path):
    whole = resolve_config("cpu-smoke", TINY + ["num_workers=0"])
    train(whole, sample_manifest, tmp_path / "whole")
    # interrupted at step 3, then resumed by a second invocation, with loader workers this time
    train(
        resolve_config("cpu-smoke", TINY + ["num_workers=2", "stop_after=3"]),
        sample_manifest,
        tmp_path / "split",
    )
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 3
    train(resolve_config("cpu-smoke", TINY + ["num_workers=2"]), sample_manifest, tmp_path / "split")
    a, b = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b], (a, b)
    wa, wb = (load_checkpoint(p / "last.pt") for p in (tmp_path / "whole", tmp_path / "split"))
    for key in wa["online"]:
        assert torch.equal(wa["online"][key], wb["online"][key]), key
    for key in wa["target"]:
        assert torch.equal(wa["target"][key], wb["target"][key]), key


def test_resume_refuses_a_changed_model(sample_manifest, tmp_path):
    train(resolve_config("cpu-smoke", TINY + ["num_workers=0", "stop_after=1"]), sample_manifest, tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        train(
            resolve_config("cpu-smoke", TINY + ["num_workers=0", "batch_size=6"]), sample_manifest, tmp_path
        )


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(sample_manifest, tmp_path, monkeypatch):
    import vito_train.loop as loop

    real = loop.symmetric_multiscale_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "symmetric_multiscale_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train(resolve_config("cpu-smoke", TINY + ["num_workers=0"]), sample_manifest, tmp_path)
    good = load_checkpoint(tmp_path / "last.pt")
    assert good["step"] == 2
    assert all(torch.isfinite(v).all() for v in good["online"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
