"""The optimiser: LARS (timm's implementation) with BYOL's exclusions for large batches, or momentum
SGD / AdamW for small ones (same exclusions from weight decay), and the warmup-cosine learning rate."""

from __future__ import annotations

import math

import torch
from timm.optim import Lars
from torch import nn


def learning_rate(
    step: int,
    *,
    base_lr: float,
    batch_size: int,
    warmup_steps: int,
    total_steps: int,
    final_ratio: float = 0.0,
) -> float:
    """``lr_peak = base_lr * B / 256``; linear warmup ``lr_peak * (k+1) / W`` for ``k < W``, then
    ``lr_peak * (r + (1 - r) * (1 + cos(pi (k - W) / (K - W))) / 2)`` with final ratio ``r``."""
    peak = base_lr * batch_size / 256
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and normalisation parameters (all 1-d tensors) get neither weight decay nor the LARS
    trust ratio (timm adapts only groups with weight_decay != 0), as in BYOL/SimCLR."""
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_lars(
    model: nn.Module, *, weight_decay: float, momentum: float, trust_coeff: float, foreach: bool | None = True
) -> Lars:
    """timm's LARS; ``foreach``: its multi-tensor form (one kernel per op over all tensors, the norms
    stacked into one trust-ratio vector), the same update as the per-tensor loop (test_train_optim);
    None lets timm choose (multi-tensor on CUDA only)."""
    return Lars(
        lars_param_groups(model, weight_decay),
        lr=0.0,
        momentum=momentum,
        trust_coeff=trust_coeff,
        foreach=foreach,
    )


def build_optimizer(
    name: str, model: nn.Module, *, weight_decay: float, momentum: float, trust_coeff: float
) -> torch.optim.Optimizer:
    """``lars`` (BYOL at batch 4096); ``sgd``: momentum SGD, the usual choice at small batches (SimCLR/MoCo
    on CIFAR, where LARS's unadapted lr on BN and bias parameters is too high); ``adamw`` (betas 0.9,
    0.999). Biases and normalisation parameters get no weight decay in all three. The lr is set every
    step (``set_learning_rate``)."""
    if name == "lars":
        return build_lars(model, weight_decay=weight_decay, momentum=momentum, trust_coeff=trust_coeff)
    groups = lars_param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0)
    raise ValueError(f"optimizer {name!r} is not lars, sgd or adamw")


def set_learning_rate(optimizer, lr: float) -> None:  # noqa: ANN001 - any torch optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
