"""Pooling of feature maps into vectors: global average, attention, multi-scale attention."""

from __future__ import annotations

import torch
from torch import nn


def attention_pool(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Attention pooling: ``z = sum_p softmax(s)_p f_p`` over spatial positions ``p``.

    ``features`` (B, C, H, W), ``logits`` (B, 1, H, W) -> (B, C). The softmax runs over the
    H*W positions of each image in float32 (bf16 softmax over 49 positions loses the small weights).
    """
    b, c = features.shape[:2]
    weights = torch.softmax(logits.reshape(b, 1, -1).float(), dim=-1)  # (B, 1, HW)
    return (features.reshape(b, c, -1).float() * weights).sum(-1).to(features.dtype)


class AttentionPool(nn.Module):
    """A small 1x1-conv head scores each position; the map is pooled by the softmax of the scores."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return attention_pool(features, self.score(features))


class GlobalAveragePool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


class StagePooling(nn.Module):
    """(stage-3 map, stage-4 map) -> one vector per scale.

    gap: [mean(stage 4)]; attention: [attn(stage 4)]; multiscale: [attn(stage 3), attn(stage 4)].
    """

    def __init__(self, kind: str, stage_channels: tuple[int, int], hidden: int = 512) -> None:
        super().__init__()
        if kind not in ("gap", "attention", "multiscale"):
            raise ValueError(f"unknown pooling {kind!r}; expected gap, attention or multiscale")
        self.kind = kind
        c3, c4 = stage_channels
        if kind == "gap":
            self.pools = nn.ModuleList([GlobalAveragePool()])
            self.out_dims = [c4]
        elif kind == "attention":
            self.pools = nn.ModuleList([AttentionPool(c4, hidden)])
            self.out_dims = [c4]
        else:
            self.pools = nn.ModuleList([AttentionPool(c3, hidden), AttentionPool(c4, hidden)])
            self.out_dims = [c3, c4]

    def forward(self, stages: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        inputs = [stages[1]] if len(self.pools) == 1 else list(stages)
        return [pool(x) for pool, x in zip(self.pools, inputs, strict=True)]
