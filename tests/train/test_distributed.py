"""Two gloo ranks on CPU give the loss and gradients of one process on the combined batch.

The model has no BatchNorm (PyTorch's SyncBatchNorm has no CPU kernel, and per-rank BN statistics
would legitimately differ from the combined batch's); it has the VITO structure that matters here:
an online network with two scales and predictors, a separate target network without gradient,
DDP around the online network, and the loss of vito_train.loss through the gathered path.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vito_train.data.pairs import StepBatchSampler
from vito_train.distributed import (
    DistEnv,
    DistributedConfigError,
    RankBatchSampler,
    StopRequest,
    all_reduce_mean,
    exchange_counts,
    gather_rows,
    gathered_symmetric_loss,
    wrap_online,
)
from vito_train.loss import symmetric_multiscale_loss

TEMPERATURE = 0.1
SCENARIOS = {"equal": (4, 4), "unequal": (5, 3)}  # unequal: samples the loader dropped on one rank


class TinyEncoder(nn.Module):
    """Images -> two projections (two 'scales'), no normalisation layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleList([nn.Linear(8, 6), nn.Linear(8, 6)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = torch.relu(self.conv(x))
        return [self.heads[0](f.mean(dim=(2, 3))), self.heads[1](f.amax(dim=(2, 3)))]


class TinyOnline(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = TinyEncoder()
        self.predictors = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [p(z) for p, z in zip(self.predictors, self.encoder(x), strict=True)]


def _models() -> tuple[TinyOnline, TinyEncoder]:
    torch.manual_seed(0)
    online, target = TinyOnline(), TinyEncoder()  # target differs from online, as after EMA steps
    target.requires_grad_(False)
    return online, target


def _views(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)


def _forward(online: nn.Module, target: nn.Module, v1: torch.Tensor, v2: torch.Tensor):
    n = v1.shape[0]
    images = torch.cat([v1, v2])
    predictions = online(images)
    with torch.no_grad():
        targets = target(images)
    return (
        [p[:n] for p in predictions],
        [p[n:] for p in predictions],
        [z[:n] for z in targets],
        [z[n:] for z in targets],
    )


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in module.named_parameters()}


def single_process_reference(total: int) -> tuple[float, dict[str, torch.Tensor]]:
    online, target = _models()
    v1, v2 = _views(total)
    loss = symmetric_multiscale_loss(*_forward(online, target, v1, v2), TEMPERATURE)
    loss.backward()
    return loss.item(), _grads(online)


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        env = DistEnv(rank, world, rank)
        results = {}
        for name, sizes in SCENARIOS.items():
            online, target = _models()
            ddp = wrap_online(online, env, torch.device("cpu"), sync_bn=False)
            v1, v2 = _views(sum(sizes))
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            parts = _forward(ddp, target, v1[lo:hi], v2[lo:hi])
            counts = exchange_counts(hi - lo, env)  # as the loop does, on the host, before the step
            loss, local_mean = gathered_symmetric_loss(*parts, TEMPERATURE, counts=counts)
            loss.backward()
            result = {
                "loss": all_reduce_mean(local_mean, weight=hi - lo, env=env),
                "grads": _grads(online),
                "counts": counts,
            }
            # the two usual mistakes, for the test to show they are caught
            online.zero_grad()
            naive = symmetric_multiscale_loss(*_forward(ddp, target, v1[lo:hi], v2[lo:hi]), TEMPERATURE)
            naive.backward()  # local negatives only
            result["local_negatives_grads"] = _grads(online)
            online.zero_grad()
            parts = _forward(ddp, target, v1[lo:hi], v2[lo:hi])
            keys = [gather_rows(z)[0] for z in (*parts[2], *parts[3])]
            offset = gather_rows(parts[2][0])[1]
            per_rank_mean = symmetric_multiscale_loss(
                parts[0], parts[1], keys[:2], keys[2:], TEMPERATURE, offset
            )
            per_rank_mean.backward()  # gathered, but each rank's plain mean: biased when counts differ
            result["unscaled_grads"] = _grads(online)
            results[name] = result
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_two_ranks_equal_one_process_on_the_combined_batch(two_rank_results, scenario):
    ref_loss, ref_grads = single_process_reference(sum(SCENARIOS[scenario]))
    for rank_result in two_rank_results:
        result = rank_result[scenario]
        assert result["counts"] == list(SCENARIOS[scenario])
        assert result["loss"] == pytest.approx(ref_loss, rel=1e-5)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(result["grads"][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def _max_rel_diff(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    return max(float((grads[k] - ref[k]).norm() / ref[k].norm()) for k in ref)


def test_the_comparison_catches_local_negatives_and_unscaled_losses(two_rank_results):
    _, equal_ref = single_process_reference(sum(SCENARIOS["equal"]))
    _, unequal_ref = single_process_reference(sum(SCENARIOS["unequal"]))
    assert _max_rel_diff(two_rank_results[0]["equal"]["local_negatives_grads"], equal_ref) > 1e-2
    assert (
        _max_rel_diff(two_rank_results[0]["equal"]["unscaled_grads"], equal_ref) < 1e-5
    )  # equal counts: fine
    assert _max_rel_diff(two_rank_results[0]["unequal"]["unscaled_grads"], unequal_ref) > 1e-2


def test_rank_batches_tile_the_global_batch_and_resume_on_another_world_size():
    global_batches = list(StepBatchSampler(8, 3, 6))
    for world in (1, 2, 4):
        per_rank = [list(RankBatchSampler(8, 3, 6, rank, world)) for rank in range(world)]
        for step, batch in enumerate(global_batches):
            assert sum((per_rank[r][step] for r in range(world)), []) == batch
    with pytest.raises(DistributedConfigError, match="multiple of 3"):
        RankBatchSampler(8, 0, 1, 0, 3)


def test_sigterm_requests_a_stop_instead_of_killing():
    # whatever handler was there before (SIG_DFL, or Ray's when an earlier test started Ray here) comes back
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    try:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.should_stop(2)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def _train_rank(rank: int, world: int, port: int, cache: str, run: str, overrides: list[str]) -> None:
    """One torchrun-style rank: the environment torchrun would set, then the real entry point."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from vito_train.config import resolve_config
    from vito_train.loop import train

    train(resolve_config("cpu-smoke", overrides), None, run, cache=cache)


@pytest.mark.slow
def test_two_rank_run_writes_once_and_resumes_on_one_rank(sample_videos, tmp_path):
    from conftest import link_sample_manifest

    from vito_train.checkpoint import load_checkpoint
    from vito_train.config import resolve_config
    from vito_train.data.prepare import prepare_cache
    from vito_train.loop import train
    from vito_train.metrics import read_metrics

    manifest = link_sample_manifest(sample_videos, tmp_path, ["realshort.mp4", "carphone_pristine.mp4"])
    cache = tmp_path / "frames"
    assert prepare_cache(manifest, cache, fps=4, short_side=64, workers=1).complete
    tiny = [
        "image_size=32",
        "batch_size=4",
        "projector_hidden=32",
        "predictor_hidden=32",
        "projector_dim=16",
        "attention_hidden=8",
        "warmup_steps=1",
        "num_workers=0",
        "log_every=1",
        "torch_threads=1",
    ]
    run = tmp_path / "run"
    mp.spawn(
        _train_rank, args=(2, _free_port(), str(cache), str(run), tiny + ["max_steps=2"]), nprocs=2, join=True
    )
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["data_position"] == 2 * 4  # global samples, not per rank
    assert [r["step"] for r in read_metrics(run)] == [1, 2]  # one writer: no duplicated rows
    summary = train(resolve_config("cpu-smoke", tiny + ["max_steps=3"]), None, run, cache=cache)  # now 1 rank
    assert (summary["start_step"], summary["end_step"]) == (2, 3)
    assert load_checkpoint(run / "last.pt")["data_position"] == 3 * 4
