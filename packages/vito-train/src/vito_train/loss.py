"""The VITO objective: InfoNCE between online predictions and target projections of the other view."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float, positive_offset: int = 0
) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018; as in MoCLR/MoCo-v3):

    ``L = -1/N sum_i log( exp(q_i . k_{i+o} / t) / sum_j exp(q_i . k_j / t) )``

    with ``q`` and ``k`` L2-normalised. ``queries`` (N, D) are this rank's; ``keys`` (M, D) may be
    gathered across ranks (M >= N), the positive of query ``i`` being key ``i + positive_offset``
    (``offset = rank * N`` for keys all-gathered in rank order). Keys should carry no gradient.
    """
    q = F.normalize(queries.float(), dim=1)
    k = F.normalize(keys.float(), dim=1)
    logits = q @ k.t() / temperature
    labels = torch.arange(q.shape[0], device=q.device) + positive_offset
    return F.cross_entropy(logits, labels)


def symmetric_multiscale_loss(
    predictions_1: list[torch.Tensor],
    predictions_2: list[torch.Tensor],
    targets_1: list[torch.Tensor],
    targets_2: list[torch.Tensor],
    temperature: float,
    positive_offset: int = 0,
) -> torch.Tensor:
    """``L = sum_s [ InfoNCE(p1_s, z2_s) + InfoNCE(p2_s, z1_s) ]``: online prediction of one view
    against the target projection of the other, both directions, summed over scales ``s``."""
    total = predictions_1[0].new_zeros((), dtype=torch.float32)
    for p1, p2, z1, z2 in zip(predictions_1, predictions_2, targets_1, targets_2, strict=True):
        total = (
            total
            + info_nce(p1, z2, temperature, positive_offset)
            + info_nce(p2, z1, temperature, positive_offset)
        )
    return total
