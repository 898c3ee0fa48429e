"""vito-train on malformed and hostile inputs: each case asserts the exit code of the contract
(README, "Exit codes"), a one-line message naming the input, and that nothing outside the output
root changed (for exit 2: nothing written at all).

In-process through typer's CliRunner, except the signal cases, which need a real process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from bad_input_checks import EvilPickle, error_line, snapshot
from typer.testing import CliRunner

from vito_train.cli import app
from vito_train.config import resolve_config

runner = CliRunner()

TINY = [
    "image_size=32",
    "batch_size=4",
    "decode_short_side=48",
    "projector_hidden=32",
    "predictor_hidden=32",
    "projector_dim=16",
    "attention_hidden=8",
    "warmup_steps=1",
    "num_workers=0",
    "log_every=1",
    "torch_threads=1",
    "arch=resnet18",
]


@pytest.fixture
def world(tmp_path: Path):
    """A folder of inputs and an output root; asserts afterwards that only the output root changed."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    state = {}
    yield inputs, out, state
    assert snapshot(tmp_path, out) == state["before"], "something outside the output root changed"


def invoke(world_state: dict, root: Path, out: Path, args: list[str]):
    world_state["before"] = snapshot(root, out)
    return runner.invoke(app, args)


def _run_args(manifest: Path, out: Path, *sets: str, preset: str = "cpu-smoke") -> list[str]:
    args = ["run", "--manifest", str(manifest), "--out", str(out), "--preset", preset, "--no-progress"]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.mark.parametrize(
    ("preset_text", "needle"),
    [
        ("base_lr: 0.1\n  batch_size: [oops\n", "line 2"),  # YAML syntax error
        ("- just\n- a list\n", "mapping"),
        ("batch_size: many\n", "batch_size='many'"),  # wrong type in a file
        ("nosuchkey: 1\n", "nosuchkey"),
    ],
)
def test_bad_preset_file(world, sample_manifest, preset_text, needle):
    inputs, out, state = world
    preset = inputs / "bad.yaml"
    preset.write_text(preset_text)
    result = invoke(state, inputs.parent, out, _run_args(sample_manifest, out, preset=str(preset)))
    assert result.exit_code == 2
    assert str(preset) in error_line(result.output, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("log_every=0", "log_every=0"),
        ("base_lr=-0.1", "base_lr=-0.1"),
        ("base_lr=nan", "base_lr=nan"),
        ("batch_size=abc", "batch_size=abc"),
        ("warmup=3", "warmup"),
        ("ckpt_every", "ckpt_every"),
    ],
)
def test_bad_set_values(world, sample_manifest, override, needle):
    inputs, out, state = world
    result = invoke(state, inputs.parent, out, _run_args(sample_manifest, out, override))
    assert result.exit_code == 2
    error_line(result.output, needle)
    assert not out.exists()


def test_set_accepts_exponents_without_a_dot():
    config = resolve_config("cpu-smoke", ["base_lr=1e-3", "weight_decay=1E-6", "max_steps=1e3"])
    assert (config.base_lr, config.weight_decay, config.max_steps) == (0.001, 1e-06, 1000)


def test_out_that_cannot_be_a_folder(world, sample_manifest):
    inputs, out, state = world
    out.mkdir()
    blocker = out / "a-file"
    blocker.write_text("not a folder")
    result = invoke(state, inputs.parent, out, _run_args(sample_manifest, blocker / "run"))
    assert result.exit_code == 2
    error_line(result.output, str(blocker))
    assert sorted(out.iterdir()) == [blocker]


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty-cache"])
def test_missing_or_malformed_data_source(world, kind):
    inputs, out, state = world
    if kind == "missing":
        source, option = inputs / "nope.parquet", "--manifest"
    elif kind == "garbage":
        source, option = inputs / "manifest.parquet", "--manifest"
        source.write_bytes(b"PAR1 this is not parquet")
    else:
        source, option = inputs / "cache", "--cache"
        source.mkdir()
    args = ["run", option, str(source), "--out", str(out), "--preset", "cpu-smoke", "--no-progress"]
    result = invoke(state, inputs.parent, out, args)
    assert result.exit_code == 2
    error_line(result.output, str(source))
    assert not out.exists()


def test_pickles_that_run_code_are_refused_everywhere(world, sample_manifest):
    """export FILE.pt, and a planted last.pt in a run directory: refused, and the code never runs."""
    inputs, out, state = world
    marker = inputs.parent / "pwned"
    evil = inputs / "evil.pt"
    torch.save({"format": "vito-train/1", "online": EvilPickle(marker)}, evil)
    result = invoke(state, inputs.parent, out, ["export", str(evil), "--out", str(out / "enc.safetensors")])
    assert result.exit_code == 2
    assert "refused" in error_line(result.output, str(evil))

    out.mkdir()
    planted = out / "last.pt"
    planted.write_bytes(evil.read_bytes())
    result = invoke(state, inputs.parent, out, _run_args(sample_manifest, out, *TINY, "max_steps=1"))
    assert result.exit_code == 2
    assert "refused" in error_line(result.output, str(planted))
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("kind", ["state-dict", "junk"])
def test_export_of_a_file_that_is_not_a_checkpoint(world, kind):
    inputs, out, state = world
    path = inputs / "weights.pt"
    if kind == "state-dict":
        torch.save(torchvision.models.resnet18().state_dict(), path)
    else:
        path.write_bytes(b"\x80\x02 truncated")
    result = invoke(state, inputs.parent, out, ["export", str(path), "--out", str(out / "e.safetensors")])
    assert result.exit_code == 2
    line = error_line(result.output, str(path))
    assert kind == "junk" or "torchvision:ARCH" in line
    assert not out.exists()


def _manifest_with_garbage(tmp: Path, sample_videos: Path, good: list[str], bad: list[str]) -> Path:
    from conftest import write_sample_manifest

    videos = tmp / "videos"
    videos.mkdir()
    for name in good:
        (videos / name).symlink_to(sample_videos / name)
    for name in bad:
        (videos / name).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video" * 50)
    real = write_sample_manifest(videos, tmp, names=good) if good else None
    import pyarrow.parquet as pq

    from videonet_curate.manifest import empty_row, rows_to_table, write_manifest

    rows = pq.read_table(real).to_pylist() if real else []
    for name in bad:
        rows.append(
            empty_row(
                clip_id=Path(name).stem,
                source="local",
                source_id=name,
                path=f"videos/{name}",
                start_s=0.0,
                end_s=2.0,
                status="kept",
                label=0,
                label_name="x",
                score=1.0,
            )
        )
    return write_manifest(rows_to_table(rows), tmp / "manifest.parquet")


def test_clips_that_never_decode_stop_with_exit_2_naming_them(world, sample_videos):
    inputs, out, state = world
    manifest = _manifest_with_garbage(inputs, sample_videos, [], ["broken_a.mp4", "broken_b.mp4"])
    args = _run_args(manifest, out, *TINY, "max_steps=50", "max_undecodable_steps=3", "decode_retries=1")
    result = invoke(state, inputs.parent, out, args)
    assert result.exit_code == 2, result.output
    line = error_line(result.output, "broken_a")
    assert "3 consecutive step" in line
    from vito_train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] == 3  # the skipped steps are checkpointed


def test_a_run_shorter_than_the_window_with_no_decodable_clip_is_not_a_result(world, sample_videos):
    inputs, out, state = world
    manifest = _manifest_with_garbage(inputs, sample_videos, [], ["broken_a.mp4"])
    result = invoke(
        state, inputs.parent, out, _run_args(manifest, out, *TINY, "max_steps=2", "decode_retries=0")
    )
    assert result.exit_code == 2
    error_line(result.output, "broken_a")


def test_skipped_work_exits_1_with_a_complete_run(world, sample_videos):
    inputs, out, state = world
    manifest = _manifest_with_garbage(inputs, sample_videos, ["realshort.mp4"], ["broken_a.mp4"])
    result = invoke(
        state, inputs.parent, out, _run_args(manifest, out, *TINY, "max_steps=2", "decode_retries=0")
    )
    assert result.exit_code == 1, result.output
    assert "samples dropped" in result.output and "Traceback" not in result.output
    assert (out / "last.pt").is_file() and (out / "metrics.jsonl").is_file()


def test_an_internal_error_is_one_line_and_exit_3(world, sample_manifest, monkeypatch):
    import vito_train.loop

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(vito_train.loop, "train", broken)
    inputs, out, state = world
    result = invoke(state, inputs.parent, out, _run_args(sample_manifest, out))
    assert result.exit_code == 3
    assert (
        "Traceback" not in result.output and "simulated bug" in result.output and "--verbose" in result.output
    )
    verbose = runner.invoke(app, ["--verbose", *_run_args(sample_manifest, out)])
    assert verbose.exit_code == 3 and "Traceback" in verbose.output


def test_a_signal_to_the_process_group_checkpoints_and_exits_128_plus_signal(sample_manifest, tmp_path):
    """What timeout, Slurm and systemd do: signal every process of the job, loader workers included.
    SIGTERM and SIGINT runs go side by side (each in its own process group) to halve the wait."""
    from vito_train.checkpoint import load_checkpoint

    runs = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / f"run-{signum}"
        args = _run_args(
            sample_manifest, out, *TINY, "num_workers=2", "max_steps=10000", "ckpt_last_every=100000"
        )
        runs[signum] = (
            out,
            subprocess.Popen(
                [sys.executable, "-m", "vito_train", *args],
                start_new_session=True,  # its own process group, as a job under a scheduler
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    try:
        deadline = time.monotonic() + 180
        waiting = dict(runs)
        while waiting:
            for signum, (out, process) in list(waiting.items()):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
                if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 1:
                    os.killpg(process.pid, signum)
                    del waiting[signum]
            time.sleep(0.1)
        for signum, (out, process) in runs.items():
            output, _ = process.communicate(timeout=120)
            assert process.returncode == 128 + signum, output
            assert "Traceback" not in output and "last.pt is written" in output
            assert load_checkpoint(out / "last.pt")["step"] >= 1
    finally:
        for _out, process in runs.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def test_run_outputs_follow_the_umask(sample_manifest, tmp_path):
    """A run directory on a shared filesystem is readable by the group when the umask says so (not the
    0600 of a temporary file); metrics.jsonl is strict JSON."""
    import json
    import stat

    previous = os.umask(0o002)
    try:
        result = runner.invoke(app, _run_args(sample_manifest, tmp_path / "run", *TINY, "max_steps=1"))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "step-00000001.pt", "config.yaml", "metrics.jsonl", "loss.png"):
        path = tmp_path / "run" / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o664, (name, oct(path.stat().st_mode))
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o775
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
