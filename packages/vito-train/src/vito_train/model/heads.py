"""Projector and predictor MLPs of the BYOL/MoCLR family: Linear-BN-ReLU-Linear."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


def projectors(in_dims: list[int], hidden: int, out_dim: int) -> nn.ModuleList:
    """One projector per pooled scale."""
    return nn.ModuleList([mlp(d, hidden, out_dim) for d in in_dims])


def predictors(n_scales: int, dim: int, hidden: int) -> nn.ModuleList:
    """One predictor per scale, online network only."""
    return nn.ModuleList([mlp(dim, hidden, dim) for _ in range(n_scales)])
