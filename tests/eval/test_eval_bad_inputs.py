"""vito-eval on malformed and hostile inputs: each case asserts the exit code of the contract
(README, "Exit codes"), a one-line message naming the input, and that nothing outside the output
root changed (for exit 2: nothing written at all). In-process through typer's CliRunner.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from bad_input_checks import EvilPickle, error_line, snapshot
from typer.testing import CliRunner

from vito_eval.cli import app

runner = CliRunner()


def image_folder(root: Path, classes: tuple[str, ...] = ("red", "green"), per_class: int = 4) -> Path:
    colours = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 20, 220)}
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shade = tuple(max(0, c - 15 * i) for c in colours[cls])
                Image.new("RGB", (24, 24), shade).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def world(tmp_path: Path):
    """(inputs, output root, invoke); afterwards only the output root may have changed."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    before: dict = {}

    def invoke(args: list[str]):
        before.update(snapshot(tmp_path, out), taken=True)
        return runner.invoke(app, args)

    yield inputs, out, invoke
    before.pop("taken")
    assert snapshot(tmp_path, out) == before, "something outside the output root changed"


def probe_args(encoder: str, dataset: str, out: Path) -> list[str]:
    return ["probe", "-e", encoder, "-d", dataset, "--out", str(out), "--no-cache", "--image-size", "32"]


def test_a_pickle_that_runs_code_is_refused_as_an_encoder(world):
    inputs, out, invoke = world
    marker = inputs.parent / "pwned"
    evil = inputs / "encoder.pt"
    torch.save({"format": "vito-train/1", "online": EvilPickle(marker)}, evil)
    data = image_folder(inputs / "data")
    result = invoke(probe_args(str(evil), f"imagefolder:{data}", out / "r.json"))
    assert result.exit_code == 2
    assert "refused" in error_line(result.output, str(evil))
    tv = invoke(probe_args(f"torchvision:resnet18:{evil}", f"imagefolder:{data}", out / "r.json"))
    assert tv.exit_code == 2
    assert "refused" in error_line(tv.output, str(evil))
    assert not marker.exists() and not out.exists()


def test_a_plain_torchvision_state_dict_says_what_to_pass_and_is_accepted_that_way(world):
    inputs, out, invoke = world
    weights = inputs / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # with its fc head, as torchvision ships
    data = image_folder(inputs / "data")
    bare = invoke(probe_args(str(weights), f"imagefolder:{data}", out / "r.json"))
    assert bare.exit_code == 2
    assert f"torchvision:resnet18:{weights}" in error_line(bare.output, str(weights))
    named = invoke(probe_args(f"torchvision:resnet18:{weights}", f"imagefolder:{data}", out / "r.json"))
    assert named.exit_code == 0, named.output
    results = json.loads((out / "r.json").read_text())["results"]
    assert results[0]["linear"]["top1"] > 0.5  # red vs green is separable even for random weights


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ("one-class", "only one class"),
        ("no-classes", "train"),
        ("no-val", "val/"),
        ("csv-columns", "path,label"),
        ("csv-latin1", "UTF-8"),
        ("idx-truncated", "train-images-idx3-ubyte.gz"),
        ("unknown-kind", "cifar"),
    ],
)
def test_empty_or_malformed_dataset(world, layout, needle):
    inputs, out, invoke = world
    root = inputs / "data"
    if layout == "one-class":
        spec = f"imagefolder:{image_folder(root, classes=('red',))}"
    elif layout == "no-classes":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
        spec = f"imagefolder:{root}"
    elif layout == "no-val":
        image_folder(root)
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "val").rmdir()
        spec = f"imagefolder:{root}"
    elif layout in ("csv-columns", "csv-latin1"):
        csv = inputs / "list.csv"
        csv.write_bytes(
            b"file,klass\na.png,x\n"
            if layout == "csv-columns"
            else "path,label\ncaf\xe9.png,x\n".encode("latin-1")
        )
        spec = f"csv:{csv}"
    elif layout == "idx-truncated":
        root.mkdir()
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ):
            (root / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x02"))
        spec = f"mnist:{root}"
    else:
        spec = f"cifar:{root}"
    result = invoke(probe_args("random:resnet18", spec, out / "r.json"))
    assert result.exit_code == 2, result.output
    error_line(result.output, needle)
    assert not out.exists()


@pytest.mark.parametrize("where", ["is-a-folder", "under-a-file"])
def test_unwritable_out_is_refused_before_any_work(world, where):
    inputs, out, invoke = world
    data = image_folder(inputs / "data")
    out.mkdir()
    if where == "is-a-folder":
        target = out / "results.json"
        target.mkdir()
    else:
        (out / "blocker").write_text("a file")
        target = out / "blocker" / "results.json"
    result = invoke(probe_args("random:resnet18", f"imagefolder:{data}", target))
    assert result.exit_code == 2
    error_line(result.output, str(target))


def test_transfer_commands_name_the_missing_layout(world):
    inputs, out, invoke = world
    davis = invoke(["davis", "-e", "random:resnet18", "--root", str(inputs / "DAVIS"), "--out", str(out)])
    assert davis.exit_code == 2
    error_line(davis.output, "ImageSets")
    ucf = invoke(
        [
            "ucf101",
            "-e",
            "random:resnet18",
            "--root",
            str(inputs),
            "--splits",
            str(inputs / "lists"),
            "--out",
            str(out),
        ]
    )
    assert ucf.exit_code == 2
    error_line(ucf.output, "classInd.txt")
    assert not out.exists()


def test_an_internal_error_is_one_line_and_exit_3(world, monkeypatch):
    import vito_eval.probe

    def broken(_config):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(vito_eval.probe, "run_probe_eval", broken)
    inputs, out, invoke = world
    result = invoke(probe_args("random:resnet18", f"imagefolder:{inputs}", out / "r.json"))
    assert result.exit_code == 3
    assert (
        "Traceback" not in result.output and "simulated bug" in result.output and "--verbose" in result.output
    )


def test_results_json_is_strict_json_with_nan_as_null(tmp_path):
    from videonet_curate.storage import atomic_write_json  # what every vito-eval result goes through

    path = tmp_path / "r.json"
    atomic_write_json(path, {"top5": math.nan, "scores": [1.0, math.inf], "n": 3})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "top5": None,
        "scores": [1.0, None],
        "n": 3,
    }
