"""Encoders: specs, determinism, weights hashes, dense maps, and clear errors for wrong checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from vito_eval.encoders import load_encoder, resnet_with_output_stride, state_dict_sha256
from vito_eval.errors import EncoderError

IMAGES = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)


def test_random_encoder_is_seeded_and_frozen() -> None:
    a, b, c = (
        load_encoder("random:resnet18"),
        load_encoder("random:resnet18"),
        load_encoder("random:resnet18:1"),
    )
    assert a.weights_hash == b.weights_hash != c.weights_hash
    torch.testing.assert_close(a.embed(IMAGES), b.embed(IMAGES))
    assert a.embed(IMAGES).shape == (2, 512) and a.feature_dim == 512
    assert not a.model.training and not any(p.requires_grad for p in a.model.parameters())


def test_uint8_and_float_inputs_agree() -> None:
    enc = load_encoder("random:resnet18")
    torch.testing.assert_close(enc.embed(IMAGES), enc.embed(IMAGES.float() / 255))


def test_resnet_dense_stages_and_output_stride() -> None:
    enc = load_encoder("random:resnet18")
    assert enc.dense(IMAGES, stage=3).shape == (2, 256, 4, 4)  # stride 16
    assert enc.dense(IMAGES, stage=3, output_stride=8).shape == (2, 256, 8, 8)  # CRW/VFS setting
    assert enc.dense(IMAGES, stage=4, output_stride=8).shape == (2, 512, 8, 8)
    # the strided copy leaves the encoder's own model untouched
    assert enc.dense(IMAGES, stage=4).shape == (2, 512, 2, 2)
    r50 = resnet_with_output_stride(torchvision.models.resnet50(), 8)
    assert r50.layer3[0].conv2.stride == (1, 1) and r50.layer3[0].downsample[0].stride == (1, 1)


def test_torchvision_weights_file_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(resnet.state_dict(), path)
    enc = load_encoder(f"torchvision:resnet18:{path}")
    resnet.fc = torch.nn.Identity()
    torch.testing.assert_close(enc.embed(IMAGES), resnet.eval()(enc.normalize(IMAGES)))
    assert enc.weights_hash == state_dict_sha256(resnet)
    with pytest.raises(EncoderError, match="r18.pth.*another architecture"):
        load_encoder(f"torchvision:resnet34:{path}")


def test_timm_weights_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    path = tmp_path / "m.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    enc = load_encoder(f"timm:resnet18:{path}")
    assert enc.embed(IMAGES).shape == (2, 512)
    assert enc.dense(IMAGES, stage=3).shape == (2, 256, 4, 4)
    with pytest.raises(EncoderError, match="another architecture"):
        load_encoder(f"timm:resnet50:{path}")


def test_efficientnet_lite0_pooled_features() -> None:
    enc = load_encoder("efficientnet-lite0")
    assert enc.embed(IMAGES).shape == (2, 1280)
    assert enc.dense(IMAGES, stage=3).shape[1:] == (112, 4, 4)
    assert enc.mean == pytest.approx((127 / 255,) * 3)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("nonsense", "unknown encoder 'nonsense'"),
        ("random:notanet", "unknown architecture 'notanet'"),
        ("torchvision:resnet18:/does/not/exist.pth", "/does/not/exist.pth does not exist"),
        ("random:resnet18:x", "seed"),
    ],
)
def test_bad_specs_name_the_input(spec: str, match: str) -> None:
    with pytest.raises(EncoderError, match=match):
        load_encoder(spec)


def test_attention_features_need_a_vito_run() -> None:
    with pytest.raises(EncoderError, match="attn"):
        load_encoder("random:resnet18", features="attn")


@pytest.fixture
def vito_run(tmp_path: Path) -> Path:
    """A run directory in vito_train's checkpoint format (tiny heads, resnet18, multi-scale pooling)."""
    pytest.importorskip("vito_train.export")
    from vito_train.checkpoint import LAST, save_checkpoint
    from vito_train.model import OnlineNetwork, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(
        "resnet18", "multiscale", attention_hidden=16, projector_hidden=8, projector_dim=8
    )
    online = OnlineNetwork(encoder, predictor_hidden=8)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(
        run / LAST,
        {
            "online": online.state_dict(),
            "config": {"attention_hidden": 16},
            "arch": "resnet18",
            "pooling": "multiscale",
            "step": 7,
        },
    )
    return run


def test_vito_run_gap_and_attention_pooling(vito_run: Path, tmp_path: Path) -> None:
    from vito_train.export import export

    gap = load_encoder(str(vito_run))
    attn = load_encoder(str(vito_run), features="attn")
    assert gap.source == "vito" and gap.info["step"] == 7
    assert gap.embed(IMAGES).shape == (2, 512)
    assert attn.embed(IMAGES).shape == (2, 256 + 512)  # attention pooling of stages 3 and 4
    assert gap.cache_key != attn.cache_key
    exported = tmp_path / "enc.safetensors"
    export(vito_run, exported)
    torch.testing.assert_close(load_encoder(str(exported)).embed(IMAGES), gap.embed(IMAGES))


def test_vito_checkpoint_of_another_architecture(vito_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(bad), metadata={"arch": "resnet50"})
    with pytest.raises(EncoderError, match="bad.safetensors"):
        load_encoder(str(bad))


def test_resnet10_run_and_its_random_init_are_the_same_architecture(tmp_path: Path) -> None:
    """vito-train's resnet10 (torchvision's ResNet class, one BasicBlock per stage): a run of it loads
    through `load_encoder`, and `random:resnet10` is the same network, so the two are compared fairly."""
    from vito_train.checkpoint import LAST, save_checkpoint
    from vito_train.model import OnlineNetwork, build_encoder

    encoder = build_encoder("resnet10", "gap", projector_hidden=8, projector_dim=8)
    run = tmp_path / "run"
    run.mkdir()
    state = {"online": OnlineNetwork(encoder, predictor_hidden=8).state_dict(), "config": {}}
    save_checkpoint(run / LAST, {**state, "arch": "resnet10", "pooling": "gap", "step": 3})
    trained, random = load_encoder(str(run)), load_encoder("random:resnet10")
    shapes = {k: v.shape for k, v in random.model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in trained.model.state_dict().items()}
    assert "layer4.0.conv1.weight" in shapes and "layer4.1.conv1.weight" not in shapes  # one block a stage
    assert trained.embed(IMAGES).shape == random.embed(IMAGES).shape == (2, 512)
    assert random.weights_hash == load_encoder("random:resnet10").weights_hash  # seeded
