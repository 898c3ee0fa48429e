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
    buffers (BatchNorm statistics and counters) are copied from the online network.

    One ``_foreach_lerp_`` (``t + (1 - tau) (o - t)``: one pass over the weights instead of a
    multiply and an add) and one ``_foreach_copy_`` per buffer dtype: a fixed handful of multi-tensor
    kernels per step, however many small tensors the heads have.
    """
    target_params = list(target.parameters())
    online_params = [p.detach() for p in online.parameters()]
    target_buffers, online_buffers = list(target.buffers()), list(online.buffers())
    if len(target_params) != len(online_params) or len(target_buffers) != len(online_buffers):
        raise ValueError("target and online networks differ in structure")
    torch._foreach_lerp_(target_params, online_params, 1.0 - decay)
    by_dtype: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for t, o in zip(target_buffers, online_buffers, strict=True):
        targets, sources = by_dtype.setdefault(t.dtype, ([], []))
        targets.append(t)
        sources.append(o)
    for targets, sources in by_dtype.values():  # float statistics; num_batches_tracked (int64)
        torch._foreach_copy_(targets, sources)
