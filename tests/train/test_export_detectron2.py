"""`vito-train export --format detectron2`: the pickle Detectron2's checkpointer reads, under its names."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from typer.testing import CliRunner

from vito_train.cli import app
from vito_train.export import detectron2_key


def detectron2_resnet_names(blocks: tuple[int, ...], bottleneck: bool) -> set[str]:
    """Parameter and buffer names of Detectron2's ResNet (modeling/backbone/resnet.py: BasicStem,
    BottleneckBlock/BasicBlock with FrozenBN or BN norms, ``shortcut`` on each stage's first block),
    written out from its module structure, independently of the converter."""
    norm = ("weight", "bias", "running_mean", "running_var")
    names = {"stem.conv1.weight"} | {f"stem.conv1.norm.{n}" for n in norm}
    convs = (1, 2, 3) if bottleneck else (1, 2)
    for stage, count in enumerate(blocks, start=2):
        for i in range(count):
            prefix = f"res{stage}.{i}"
            for c in convs:
                names.add(f"{prefix}.conv{c}.weight")
                names |= {f"{prefix}.conv{c}.norm.{n}" for n in norm}
            if i == 0 and (bottleneck or stage > 2):  # basic blocks of res2 keep 64 channels: no shortcut
                names.add(f"{prefix}.shortcut.weight")
                names |= {f"{prefix}.shortcut.norm.{n}" for n in norm}
    return names


@pytest.mark.parametrize(
    ("arch", "blocks", "bottleneck"), [("resnet50", (3, 4, 6, 3), True), ("resnet18", (2, 2, 2, 2), False)]
)
def test_detectron2_export_has_detectron2_names_and_the_weights(tmp_path, arch, blocks, bottleneck):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    exported = tmp_path / f"{arch}.safetensors"
    save_file(
        state, str(exported), metadata={"arch": arch, "pooling": "gap", "step": "7", "format": "torchvision"}
    )
    out = tmp_path / f"{arch}.pkl"
    result = CliRunner().invoke(app, ["export", str(exported), "--format", "detectron2", "--out", str(out)])
    assert result.exit_code == 0, result.output

    with open(out, "rb") as handle:
        payload = pickle.load(handle)
    assert payload["matching_heuristics"] is True and "VITO" in payload["__author__"]
    weights = payload["model"]
    assert set(weights) == detectron2_resnet_names(blocks, bottleneck)
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    # each Detectron2 name holds the torchvision tensor it was converted from
    inverse = {detectron2_key(k): k for k in state if not k.endswith("num_batches_tracked")}
    for name, value in weights.items():
        np.testing.assert_array_equal(value, state[inverse[name]].numpy())
    np.testing.assert_array_equal(
        weights["res3.0.shortcut.norm.running_var"], model.layer2[0].downsample[1].running_var
    )
    np.testing.assert_array_equal(weights["stem.conv1.weight"], model.conv1.weight.detach())
    assert not list(tmp_path.glob(".*.tmp"))


def test_key_mapping_follows_moco_converter():
    assert detectron2_key("conv1.weight") == "stem.conv1.weight"
    assert detectron2_key("bn1.running_mean") == "stem.conv1.norm.running_mean"
    assert detectron2_key("layer1.0.bn3.weight") == "res2.0.conv3.norm.weight"
    assert detectron2_key("layer4.2.conv2.weight") == "res5.2.conv2.weight"
    assert detectron2_key("layer3.0.downsample.0.weight") == "res4.0.shortcut.weight"
    assert detectron2_key("layer3.0.downsample.1.bias") == "res4.0.shortcut.norm.bias"
