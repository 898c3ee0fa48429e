"""Export of a trained run: torchvision keys, load_backbone, load_pooled_encoder, typed errors."""

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from typer.testing import CliRunner

from vito_train.checkpoint import CheckpointError
from vito_train.cli import app
from vito_train.export import ArchitectureMismatchError, load_backbone, load_pooled_encoder
from vito_train.model import build_encoder

pytestmark = pytest.mark.slow


def test_cli_export_loads_into_torchvision_with_only_fc_missing(smoke_run, tmp_path):
    out = tmp_path / "r18.safetensors"
    result = CliRunner().invoke(app, ["export", str(smoke_run), "--format", "torchvision", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(load_file(out), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    trained = torch.load(smoke_run / "last.pt", weights_only=False)["online"]
    assert torch.equal(model.conv1.weight, trained["encoder.backbone.resnet.conv1.weight"])

    backbone, info = load_backbone(out)
    assert info["arch"] == "resnet18" and info["step"] == 40
    assert backbone(torch.rand(2, 3, 64, 64)).shape == (2, 512)
    with pytest.raises(ArchitectureMismatchError, match="resnet18"):
        load_backbone(out, arch="resnet50")
    with pytest.raises(CheckpointError, match="pooling"):
        load_pooled_encoder(out)  # a torchvision export holds no attention heads


def test_run_directory_and_vito_encoder_export_give_the_same_pooled_encoder(smoke_run, tmp_path):
    from vito_train.export import export

    backbone, info = load_backbone(smoke_run)
    assert info["source"].endswith("last.pt")
    export(smoke_run, tmp_path / "enc.safetensors", "vito-encoder")
    images = torch.rand(2, 3, 64, 64)
    from_run, from_file = load_pooled_encoder(smoke_run), load_pooled_encoder(tmp_path / "enc.safetensors")
    with torch.no_grad():
        a, b = from_run(images), from_file(images)
    assert a.shape == (2, 256 + 512) and from_run.out_dim == 768  # multiscale: stage 3 + stage 4
    assert torch.equal(a, b)


def test_build_encoder_and_missing_inputs():
    encoder = build_encoder("resnet18", "attention", projector_hidden=32, projector_dim=16)
    with torch.no_grad():
        encoder.eval()
        assert [z.shape for z in encoder(torch.rand(2, 3, 64, 64))] == [(2, 16)]
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone("/nonexistent/run")
