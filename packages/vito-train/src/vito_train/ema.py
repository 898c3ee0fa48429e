"""The EMA target network: its decay schedule and a multi-tensor update."""

from __future__ import annotations

import math

import torch
from torch import nn


def ema_decay(step: int, total_steps: int, base: float) -> float:
    """BYOL's cosine schedule: ``tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2``, from
    ``tau_base`` at step 0 to 1 at step ``K``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, decay: float) -> None:
    """``theta_target <- tau theta_target + (1 - tau) theta_online`` for all parameters at once;
    buffers (BatchNorm statistics) are copied from the online network."""
    target_params = [p for p in target.parameters()]
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks differ in structure")
    torch._foreach_mul_(target_params, decay)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - decay)
    target_buffers = [b for b in target.buffers() if b.is_floating_point()]
    online_buffers = [b for b in online.buffers() if b.is_floating_point()]
    if target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        if not t.is_floating_point():
            t.copy_(o)  # num_batches_tracked: a handful of scalars
