"""Trained encoders out of a run: torchvision-keyed safetensors, and loaders for vito-eval.

Formats:
- ``torchvision``: the online ResNet's weights under torchvision's keys (``fc.`` absent), so
  ``torchvision.models.<arch>().load_state_dict(sd, strict=False)`` misses only ``fc.weight/bias``.
- ``vito-encoder``: the same keys plus the trained pooling heads under ``vito_pooling.``, for
  :func:`load_pooled_encoder`.
Both carry metadata: arch, pooling, step, source, format.
- ``detectron2``: a pickle ``{"model": {name: ndarray}, "__author__", "matching_heuristics": True}``
  with Detectron2's ResNet names (``stem.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...),
  the layout MoCo's ``detection/convert-pretrain-to-detectron2.py`` writes, which Detectron2's
  checkpointer loads as ``MODEL.WEIGHTS`` (with ``MODEL.PIXEL_MEAN/STD`` and ``INPUT.FORMAT: RGB`` set
  to ImageNet's RGB statistics, as MoCo's configs do, since the trunk was trained on RGB in 0..1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from torch import nn

from videonet_curate.storage import atomic_write_bytes
from vito_train.checkpoint import LAST, CheckpointError, load_checkpoint
from vito_train.model import VitoEncoder, build_encoder
from vito_train.model.backbone import build_resnet

log = logging.getLogger(__name__)

FORMATS = ("torchvision", "vito-encoder", "detectron2")
BACKBONE_PREFIX = "encoder.backbone.resnet."
POOLING_PREFIX = "encoder.pooling."
SAFETENSORS_POOLING_PREFIX = "vito_pooling."


class ArchitectureMismatchError(CheckpointError):
    """The weights belong to another architecture than the one asked for."""


def _checkpoint_path(path_or_run: str | Path) -> Path:
    path = Path(path_or_run)
    return path / LAST if path.is_dir() else path


def _from_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    payload = load_checkpoint(path)
    online = payload["online"]
    backbone = {k[len(BACKBONE_PREFIX) :]: v for k, v in online.items() if k.startswith(BACKBONE_PREFIX)}
    pooling = {k[len(POOLING_PREFIX) :]: v for k, v in online.items() if k.startswith(POOLING_PREFIX)}
    config = payload["config"]
    info = {
        "arch": payload["arch"],
        "pooling": payload["pooling"],
        "step": int(payload["step"]),
        "source": str(path),
        "attention_hidden": config.get("attention_hidden", 512),
    }
    return backbone, pooling, info


def _from_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if "arch" not in meta:
        raise CheckpointError(f"{path} has no 'arch' metadata: export it with `vito-train export`")
    pooling = {
        k[len(SAFETENSORS_POOLING_PREFIX) :]: v
        for k, v in tensors.items()
        if k.startswith(SAFETENSORS_POOLING_PREFIX)
    }
    backbone = {k: v for k, v in tensors.items() if not k.startswith(SAFETENSORS_POOLING_PREFIX)}
    info = {
        "arch": meta["arch"],
        "pooling": meta.get("pooling", "gap"),
        "step": int(meta.get("step", -1)),
        "source": str(path),
        "attention_hidden": int(meta.get("attention_hidden", 512)),
    }
    return backbone, pooling, info


def read_weights(
    path_or_run: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(torchvision-keyed backbone weights, pooling weights, info) from a run, a .pt or a .safetensors."""
    path = _checkpoint_path(path_or_run)
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist: pass a run directory (with {LAST}) or an exported file"
        )
    if path.suffix == ".safetensors":
        return _from_safetensors(path)
    return _from_checkpoint(path)


def _check_arch(info: dict[str, Any], arch: str | None) -> None:
    if arch is not None and arch != info["arch"]:
        raise ArchitectureMismatchError(
            f"{info['source']} holds a {info['arch']} but {arch} was asked for; pass arch={info['arch']!r} "
            "or another checkpoint"
        )


def load_backbone(path_or_run: str | Path, arch: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A torchvision ResNet (fc = Identity) with the online network's weights, and info
    ``{arch, source, step, pooling}``. ``arch``, when given, must match the weights."""
    backbone, _pooling, info = read_weights(path_or_run)
    _check_arch(info, arch)
    model = build_resnet(info["arch"])
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        raise ArchitectureMismatchError(
            f"{info['source']}: weights do not fit a {info['arch']}: {exc}"
        ) from exc
    return model.eval(), info


class PooledEncoder(nn.Module):
    """Images -> the concatenated pooled vectors (one per scale) of a trained encoder."""

    def __init__(self, encoder: VitoEncoder) -> None:
        super().__init__()
        self.backbone, self.pooling = encoder.backbone, encoder.pooling
        self.out_dim = sum(encoder.pooling.out_dims)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.pooling(self.backbone(images)), dim=1)


def load_pooled_encoder(path_or_run: str | Path, arch: str | None = None) -> PooledEncoder:
    """The trained backbone with its trained (multi-scale) attention pooling, in eval mode.

    Works from a run directory, a checkpoint, or a ``vito-encoder`` export; a ``torchvision``
    export holds no pooling heads and serves only runs trained with ``pooling=gap``.
    """
    backbone, pooling, info = read_weights(path_or_run)
    _check_arch(info, arch)
    encoder = build_encoder(
        info["arch"],
        info["pooling"],
        attention_hidden=info["attention_hidden"],
        projector_hidden=8,
        projector_dim=8,
    )  # projectors are not used
    needs_pooling = any(True for _ in encoder.pooling.parameters())
    if needs_pooling and not pooling:
        raise CheckpointError(
            f"{info['source']} holds no pooling weights for pooling={info['pooling']}: pass the run directory "
            "or an export made with --format vito-encoder"
        )
    try:
        encoder.backbone.resnet.load_state_dict(backbone, strict=True)
        encoder.pooling.load_state_dict(pooling, strict=True)
    except RuntimeError as exc:
        raise ArchitectureMismatchError(
            f"{info['source']}: weights do not fit {info['arch']}: {exc}"
        ) from exc
    return PooledEncoder(encoder).eval()


def detectron2_key(torchvision_key: str) -> str:
    """A torchvision ResNet key under Detectron2's name (MoCo's convert-pretrain-to-detectron2 rules)."""
    k = torchvision_key
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_payload(backbone: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """The pickle Detectron2's DetectionCheckpointer reads (``num_batches_tracked`` counters dropped, as
    Detectron2's own converted ImageNet weights have none)."""
    model = {
        detectron2_key(k): v.detach().cpu().numpy()
        for k, v in backbone.items()
        if not k.endswith("num_batches_tracked")
    }
    return {
        "model": model,
        "__author__": f"VITO ({info['arch']}, step {info['step']})",
        "matching_heuristics": True,
    }


def export(path_or_run: str | Path, out: str | Path, fmt: str = "torchvision") -> dict[str, Any]:
    """Write the online encoder of a run (or checkpoint) as safetensors (or a Detectron2 pickle);
    returns its metadata."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    backbone, pooling, info = read_weights(path_or_run)
    if fmt == "detectron2":
        import pickle

        atomic_write_bytes(Path(out), pickle.dumps(detectron2_payload(backbone, info), protocol=4))
        log.info("exported %s (detectron2, step %s) to %s", info["arch"], info["step"], out)
        return {"format": fmt, "arch": info["arch"], "step": str(info["step"]), "source": info["source"]}
    tensors = {k: v.contiguous() for k, v in backbone.items()}
    if fmt == "vito-encoder":
        tensors.update({SAFETENSORS_POOLING_PREFIX + k: v.contiguous() for k, v in pooling.items()})
    metadata = {
        "format": fmt,
        "arch": info["arch"],
        "pooling": info["pooling"],
        "step": str(info["step"]),
        "source": info["source"],
        "attention_hidden": str(info["attention_hidden"]),
        "keys": "torchvision" if fmt == "torchvision" else "torchvision+vito_pooling",
    }
    out = Path(out)
    atomic_write_bytes(out, save_bytes(tensors, metadata=metadata))
    log.info("exported %s (%s, step %s) to %s", info["arch"], fmt, info["step"], out)
    return metadata


__all__ = [
    "ArchitectureMismatchError",
    "PooledEncoder",
    "detectron2_key",
    "detectron2_payload",
    "export",
    "load_backbone",
    "load_pooled_encoder",
    "read_weights",
]
