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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from vito_train.loss import symmetric_multiscale_loss

log = logging.getLogger(__name__)


class DistributedConfigError(ValueError):
    """A launch whose world size, batch size or device cannot work together."""


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # a gloo group for small host-side exchanges (sample counts, stop flags) that must not wait
    # for the GPU stream; NCCL collectives on host values would force a device sync each step
    host_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def env_from_torchrun() -> DistEnv:
    """Rank, world size and local rank from torchrun's environment (one process when unset)."""
    return DistEnv(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


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
                "torchrun with --nproc_per_node at most the GPU count"
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    env.host_group = dist.new_group(backend="gloo") if dist.get_backend() == "nccl" else dist.group.WORLD
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
            f"multiple of {world_size}, e.g. --set "
            f"batch_size={batch_size // world_size * world_size or world_size}"
        )
    return batch_size // world_size


class RankBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch of consecutive sample indices (see module docstring)."""

    def __init__(
        self, batch_size: int, start_step: int, end_step: int, rank: int = 0, world_size: int = 1
    ) -> None:
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
            raise DistributedConfigError(
                "sync_bn=true needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                "set sync_bn=false for CPU runs"
            )
        online = nn.SyncBatchNorm.convert_sync_batchnorm(online)
    return nn.parallel.DistributedDataParallel(
        online, device_ids=[device.index] if device.type == "cuda" else None
    )


def convert_sync_bn(module: nn.Module, env: DistEnv, enabled: bool) -> nn.Module:
    """SyncBatchNorm for a module that is not DDP-wrapped (the EMA target), so its batch statistics
    are global like the online network's."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if enabled and env.active else module


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def exchange_counts(n_local: int, env: DistEnv | None = None) -> list[int]:
    """Every rank's local sample count, in rank order (on the host; ``[n_local]`` on one process)."""
    if not _distributed():
        return [int(n_local)]
    group = env.host_group if env is not None else None
    device = (
        None
        if group is not None or dist.get_backend() != "nccl"
        else torch.device("cuda", torch.cuda.current_device())
    )
    mine = torch.tensor([int(n_local)], dtype=torch.long, device=device)
    counts = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, mine, group=group)
    return [int(c.item()) for c in counts]


@torch.no_grad()
def gather_rows(local: torch.Tensor, counts: Sequence[int] | None = None) -> tuple[torch.Tensor, int, int]:
    """All ranks' rows in rank order, without gradient: ``(all_rows, offset, total)``.

    Ranks may hold different row counts (samples dropped by the loader): ``counts`` (from
    ``exchange_counts``; exchanged here when None) lets rows be padded to the largest and trimmed.
    ``offset`` is the count on lower ranks.
    """
    if not _distributed():
        return local.detach(), 0, local.shape[0]
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = list(counts) if counts is not None else exchange_counts(local.shape[0])
    if sizes[rank] != local.shape[0]:
        raise ValueError(f"rank {rank} holds {local.shape[0]} rows but its exchanged count is {sizes[rank]}")
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    rows = torch.cat([g[:n] for g, n in zip(gathered, sizes, strict=True)])
    return rows, sum(sizes[:rank]), sum(sizes)


def gathered_symmetric_loss(
    predictions_1: list[torch.Tensor],
    predictions_2: list[torch.Tensor],
    targets_1: list[torch.Tensor],
    targets_2: list[torch.Tensor],
    temperature: float,
    counts: Sequence[int] | None = None,
    loss_fn: Callable[..., torch.Tensor] = symmetric_multiscale_loss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_to_backward, global_mean_loss_estimate)`` for this rank.

    The targets of every scale and both views are gathered in one collective; each local query's
    negatives are all global keys. ``loss_to_backward`` carries the ``W * n_r / N`` factor (module
    docstring); the second value is this rank's unscaled mean, for logging.
    """
    n = targets_1[0].shape[0]
    world = dist.get_world_size() if _distributed() else 1
    widths = [z.shape[1] for z in targets_1]
    local = torch.cat([z.detach().float() for z in (*targets_1, *targets_2)], dim=1)
    gathered, offset, total = gather_rows(local, counts)
    parts = list(torch.split(gathered, widths * 2, dim=1))
    keys_1, keys_2 = parts[: len(widths)], parts[len(widths) :]
    loss = loss_fn(predictions_1, predictions_2, keys_1, keys_2, temperature, positive_offset=offset)
    return loss * (world * n / total), loss.detach()


def _host_reduce(values: list[float], env: DistEnv | None, dtype: torch.dtype) -> torch.Tensor:
    group = env.host_group if env is not None else None
    device = (
        None
        if group is not None or dist.get_backend() != "nccl"
        else torch.device("cuda", torch.cuda.current_device())
    )
    t = torch.tensor(values, dtype=dtype, device=device)
    dist.all_reduce(t, group=group)
    return t.cpu()


def all_reduce_mean(value: float | torch.Tensor, weight: float = 1.0, env: DistEnv | None = None) -> float:
    """The ``weight``-weighted mean of a scalar over ranks (for logs; the value itself on one process)."""
    if not _distributed():
        return float(value)
    total, weights = _host_reduce([float(value) * weight, float(weight)], env, torch.float64).tolist()
    return total / weights


def all_reduce_sum(value: int, env: DistEnv | None = None) -> int:
    if not _distributed():
        return int(value)
    return int(_host_reduce([int(value)], env, torch.long)[0])


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: loader workers ignore SIGTERM and SIGINT.

    ``timeout``, Slurm, systemd and Ctrl-C signal the whole process group; workers that died of it
    would take the batch in flight with them before the main process could checkpoint. The main
    process handles the signal (`StopRequest`) and shuts its workers down as usual.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """SIGTERM (what schedulers send before killing a job) and SIGINT set a flag; the loop asks
    ``should_stop`` after each step, saves a checkpoint and leaves. Under several ranks the flag is
    all-reduced (every ``check_every`` steps, to keep the hot loop free of syncs) so that every rank
    stops after the same step and the collectives stay matched. A second SIGINT raises
    KeyboardInterrupt at once, for a user who will not wait for the step."""

    def __init__(
        self, env: DistEnv | None = None, check_every: int = 10, signals: tuple[int, ...] = (signal.SIGTERM,)
    ) -> None:
        self.env, self.requested, self.check_every = env, False, max(1, check_every)
        self.signum = 0  # the first signal received
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("received signal %d: will checkpoint and stop after this step", signum)
        self.requested = True
        self.signum = self.signum or signum

    def should_stop(self, step: int) -> bool:
        if not _distributed():
            return self.requested
        if step % self.check_every:
            return False
        return all_reduce_sum(int(self.requested), self.env) > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
