"""Data-parallel training under torchrun: process group, per-rank data, gathered InfoNCE, stop signals.

The contract that keeps a multi-rank run equal to one process on the combined batch:

* the global batch (``config.batch_size``) is fixed; rank ``r`` of ``W`` takes samples
  ``[step * B + r * B / W, step * B + (r + 1) * B / W)``, so the data position is counted in global
  samples and a run resumes on any world size;
* target keys are computed without gradient and all-gathered (MoCo-v3's pattern); the positive of
  local query ``i`` is global key ``i + offset``, ``offset`` = samples held by lower ranks;
* each rank's loss is scaled by ``W * n_r / N`` (``n_r`` local, ``N`` global good samples), so
  DDP's gradient *average* over ranks equals the gradient of the mean loss over the global batch,
  even when some samples were dropped and ranks hold different counts.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from vito_train.loss import symmetric_multiscale_loss

log = logging.getLogger(__name__)


class DistributedConfigError(ValueError):
    """A launch whose world size, batch size or device cannot work together."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def env_from_torchrun() -> DistEnv:
    """Rank, world size and local rank from torchrun's environment (one process when unset)."""
    return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); returns the env and
    this rank's device (``cuda:LOCAL_RANK``). A single process returns (rank 0 of 1, ``device``)."""
    env = env_from_torchrun()
    if env.world_size == 1:
        return env, device
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise DistributedConfigError(
                f"LOCAL_RANK={env.local_rank} but this node has {torch.cuda.device_count()} GPUs: launch "
                "torchrun with --nproc_per_node at most the GPU count")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("rank %d of %d (local rank %d) on %s", env.rank, env.world_size, env.local_rank, device)
    return env, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch_divides(batch_size: int, world_size: int) -> int:
    """The per-rank batch; the global batch must split evenly over the ranks."""
    if batch_size % world_size:
        raise DistributedConfigError(
            f"batch_size={batch_size} (global) does not divide over {world_size} ranks: set batch_size to a "
            f"multiple of {world_size}, e.g. --set batch_size={batch_size // world_size * world_size or world_size}")
    return batch_size // world_size


class RankBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch of consecutive sample indices (see module docstring)."""

    def __init__(self, batch_size: int, start_step: int, end_step: int, rank: int = 0, world_size: int = 1) -> None:
        self.per_rank = check_batch_divides(batch_size, world_size)
        self.batch_size, self.start_step, self.end_step, self.rank = batch_size, start_step, end_step, rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            first = step * self.batch_size + self.rank * self.per_rank
            yield list(range(first, first + self.per_rank))

    def __len__(self) -> int:
        return max(self.end_step - self.start_step, 0)


def wrap_online(online: nn.Module, env: DistEnv, device: torch.device, *, sync_bn: bool) -> nn.Module:
    """DDP around the online network (SyncBatchNorm first when asked; NCCL-only in PyTorch)."""
    if not env.active:
        return online
    if sync_bn:
        if device.type != "cuda":
            raise DistributedConfigError("sync_bn=true needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                                         "set sync_bn=false for CPU runs")
        online = nn.SyncBatchNorm.convert_sync_batchnorm(online)
    return nn.parallel.DistributedDataParallel(online, device_ids=[device.index] if device.type == "cuda" else None)


def convert_sync_bn(module: nn.Module, env: DistEnv, enabled: bool) -> nn.Module:
    """SyncBatchNorm for a module that is not DDP-wrapped (the EMA target), so its batch statistics
    are global like the online network's."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if enabled and env.active else module


@torch.no_grad()
def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """All ranks' rows in rank order, without gradient: ``(all_rows, offset, total)``.

    Ranks may hold different row counts (samples dropped by the loader): counts are exchanged
    first and rows padded to the largest, then trimmed. ``offset`` is the count on lower ranks.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local.detach(), 0, local.shape[0]
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    rows = torch.cat([g[:n] for g, n in zip(gathered, sizes, strict=True)])
    return rows, sum(sizes[:rank]), sum(sizes)


def gathered_symmetric_loss(predictions_1: list[torch.Tensor], predictions_2: list[torch.Tensor],
                            targets_1: list[torch.Tensor], targets_2: list[torch.Tensor], temperature: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_to_backward, global_mean_loss_estimate)`` for this rank.

    The targets of every scale and both views are gathered in one collective; each local query's
    negatives are all global keys. ``loss_to_backward`` carries the ``W * n_r / N`` factor (module
    docstring); the second value is this rank's unscaled mean, for logging.
    """
    n = targets_1[0].shape[0]
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    widths = [z.shape[1] for z in targets_1]
    local = torch.cat([z.detach().float() for z in (*targets_1, *targets_2)], dim=1)
    gathered, offset, total = gather_rows(local)
    parts = list(torch.split(gathered, widths * 2, dim=1))
    keys_1, keys_2 = parts[: len(widths)], parts[len(widths):]
    loss = symmetric_multiscale_loss(predictions_1, predictions_2, keys_1, keys_2, temperature,
                                     positive_offset=offset)
    return loss * (world * n / total), loss.detach()


def all_reduce_mean(value: float | torch.Tensor, weight: float = 1.0) -> float:
    """The ``weight``-weighted mean of a scalar over ranks (for logs; a no-op on one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    device = value.device if isinstance(value, torch.Tensor) else torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([float(value) * weight, weight], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / t[1])


def all_reduce_sum(value: int) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class StopRequest:
    """SIGTERM (what schedulers send before killing a job) and SIGINT set a flag; the loop asks
    ``should_stop`` after each step, saves a checkpoint and leaves. Under several ranks the flag is
    all-reduced (every ``check_every`` steps, to keep the hot loop free of syncs) so that every rank
    stops after the same step and the collectives stay matched."""

    def __init__(self, check_every: int = 10, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.requested, self.check_every = False, max(1, check_every)
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        log.warning("received signal %d: will checkpoint and stop after this step", signum)
        self.requested = True

    def should_stop(self, step: int) -> bool:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.requested
        if step % self.check_every:
            return False
        return all_reduce_sum(int(self.requested)) > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
