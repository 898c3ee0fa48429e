"""The VITO networks: an encoder (trunk + pooling + projectors) and the online predictor."""

from __future__ import annotations

import torch
from torch import nn

from vito_train.model.backbone import ResNetTrunk
from vito_train.model.heads import predictors, projectors
from vito_train.model.pooling import StagePooling


class VitoEncoder(nn.Module):
    """Images -> per-scale projections. ``pooled`` gives the concatenated pooled vectors for eval."""

    def __init__(
        self,
        arch: str,
        pooling: str,
        *,
        attention_hidden: int = 512,
        projector_hidden: int = 4096,
        projector_dim: int = 256,
    ) -> None:
        super().__init__()
        self.arch, self.pooling_kind = arch, pooling
        self.backbone = ResNetTrunk(arch)
        self.pooling = StagePooling(pooling, self.backbone.stage_channels, attention_hidden)
        self.projectors = projectors(self.pooling.out_dims, projector_hidden, projector_dim)

    def pooled_per_scale(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.pooling(self.backbone(images))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.pooled_per_scale(images), dim=1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [proj(v) for proj, v in zip(self.projectors, self.pooled_per_scale(images), strict=True)]


class OnlineNetwork(nn.Module):
    """The encoder followed by a predictor per scale."""

    def __init__(self, encoder: VitoEncoder, predictor_hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        n_scales = len(encoder.projectors)
        dim = encoder.projectors[0][-1].out_features
        self.predictors = predictors(n_scales, dim, predictor_hidden)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [pred(z) for pred, z in zip(self.predictors, self.encoder(images), strict=True)]


def build_encoder(
    arch: str,
    pooling: str,
    *,
    attention_hidden: int = 512,
    projector_hidden: int = 4096,
    projector_dim: int = 256,
) -> VitoEncoder:
    """The encoder trained by VITO (the target network is a copy of it)."""
    return VitoEncoder(
        arch,
        pooling,
        attention_hidden=attention_hidden,
        projector_hidden=projector_hidden,
        projector_dim=projector_dim,
    )


def build_online(config) -> OnlineNetwork:  # noqa: ANN001 - TrainConfig; avoids an import cycle
    encoder = build_encoder(
        config.arch,
        config.pooling,
        attention_hidden=config.attention_hidden,
        projector_hidden=config.projector_hidden,
        projector_dim=config.projector_dim,
    )
    return OnlineNetwork(encoder, config.predictor_hidden)


__all__ = ["VitoEncoder", "OnlineNetwork", "build_encoder", "build_online"]
