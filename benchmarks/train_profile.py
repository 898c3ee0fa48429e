"""Where a VITO training step spends its time (torch.profiler), and A/B ratios of its parts, in one run.

  python benchmarks/train_profile.py                    # CPU: resnet18 + paper heads, 112 px, batch 32
  python benchmarks/train_profile.py --json OUT.json    # also write every figure as JSON

1. profile, synthetic views: the step's regions (vito.images, vito.forward_and_loss, vito.backward,
   vito.optimizer, vito.ema; record_function marks in loop.train_step) as shares of the step, and the
   top ops by self time.
2. profile, frame-cache views (``--cache DIR``, default: a cache of the sample clips, built once):
   the same with the loader in this process (``num_workers=0``), so its share shows as vito.data.
3. A/B, timed interleaved (A, B, A, B, ...; median of each) so that a noisy machine slows both alike:
   LARS per-tensor vs multi-tensor (``foreach``) as the optimizer step alone and as the whole step;
   EMA multiply+add with per-buffer copies (the previous form) vs one lerp + one copy per dtype;
   the online network's forward+backward with and without channels_last, and with and without the
   BatchNorm of the projector/predictor heads (cost only: the heads keep their BN, it is the method).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
for package in ("videonet-curate", "vito-train"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))
sys.path.insert(0, str(ROOT / "tests" / "train"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vito_train.config import resolve_config  # noqa: E402
from vito_train.ema import ema_decay, ema_update_  # noqa: E402
from vito_train.loop import build_loader, build_state, train_step  # noqa: E402

REGIONS = ("vito.data", "vito.images", "vito.forward_and_loss", "vito.backward", "vito.optimizer", "vito.ema")


def make_state(args: argparse.Namespace, *overrides: str):
    config = resolve_config(
        args.preset,
        [
            f"arch={args.arch}",
            f"image_size={args.image_size}",
            f"batch_size={args.batch}",
            "num_workers=0",
            f"device={args.device}",
            "precision=fp32" if args.device == "cpu" else "precision=bf16",
            "deterministic=false",
            "compile=false",
            "channels_last=false",
            f"torch_threads={args.threads}",
            "max_steps=1000",
            "warmup_steps=10",
            *overrides,
        ],
    )
    return config, build_state(config, torch.device(args.device))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def profile_steps(step: Callable[[], None], steps: int, device: str) -> dict:
    """Regions as shares of the profiled wall time, and the top ops by self time."""
    step()  # warm-up outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    events = prof.key_averages()
    regions = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key in REGIONS}
    ops = sorted((e for e in events if not e.key.startswith("vito.")), key=lambda e: -e.self_cpu_time_total)
    total_self = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    top = [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / steps, "calls": e.count // steps}
        for e in ops[:12]
    ]
    return {"step_ms": wall_ms, "regions_ms": regions, "top_ops": top, "self_ms_total": total_self}


def print_profile(title: str, result: dict) -> None:
    print(f"\n== {title}: {result['step_ms']:.0f} ms per step (profiled)")
    for name in REGIONS:
        if name in result["regions_ms"]:
            ms = result["regions_ms"][name]
            print(f"  {name:24s} {ms:8.1f} ms  {ms / result['step_ms']:6.1%}")
    print(f"  top ops by self time (share of all self time, {result['self_ms_total']:.0f} ms):")
    for op in result["top_ops"]:
        share = op["self_ms"] / result["self_ms_total"]
        print(f"    {op['op']:44s} {op['self_ms']:8.1f} ms  {share:6.1%}  x{op['calls']}")


def interleaved(
    a: Callable[[], None], b: Callable[[], None], repeats: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """Median seconds (by ``clock``) of ``a`` and of ``b``, run alternately (one warm-up each)."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((a, times_a), (b, times_b)):
            start = clock()
            fn()
            times.append(clock() - start)
    return statistics.median(times_a), statistics.median(times_b)


@torch.no_grad()
def ema_update_previous(target: nn.Module, online: nn.Module, decay: float) -> None:
    """The EMA update as it was before the lerp form (for the A/B only)."""
    target_params = list(target.parameters())
    torch._foreach_mul_(target_params, decay)
    torch._foreach_add_(target_params, [p.detach() for p in online.parameters()], alpha=1.0 - decay)
    target_buffers = [b for b in target.buffers() if b.is_floating_point()]
    online_buffers = [b for b in online.buffers() if b.is_floating_point()]
    torch._foreach_copy_(target_buffers, online_buffers)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        if not t.is_floating_point():
            t.copy_(o)


def without_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose BatchNorm1d layers (the MLP heads') are identities."""
    module = copy.deepcopy(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.Identity())
        else:
            setattr(module, name, without_batchnorm(child))
    return module


def frame_cache(path: Path | None) -> Path:
    if path is not None:
        return path
    from loader import sample_manifest  # the loader benchmark's manifest of the sample clips

    from vito_train.data.prepare import prepare_cache

    path = Path(tempfile.gettempdir()) / "vito-bench-frame-cache"
    if not (path / "index.parquet").is_file():
        manifest = sample_manifest(path.parent / (path.name + "-manifest"))
        prepare_cache(manifest, path, fps=8.0, short_side=256, clips_per_shard=2)
    return path


def main() -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper-r50", help="heads and pooling from this preset")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--ab-repeats", type=int, default=5, help="interleaved repeats per A/B pair")
    parser.add_argument("--cache", type=Path, help="frame cache for part 2 (default: sample clips)")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{torch.get_num_threads()} torch threads",
        "model": f"{args.arch} @ {args.image_size}px, batch {args.batch} pairs, {args.device}",
    }
    print(f"{results['model']}; machine: {results['machine']}")

    config, state = make_state(args)
    views = [torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8)] * 2
    results["synthetic"] = profile_steps(lambda: train_step(state, *views), args.profile_steps, args.device)
    print_profile("synthetic views", results["synthetic"])

    if not args.skip_cache:
        cache = frame_cache(args.cache)
        batches = iter(build_loader(config, None, 0, 10_000, torch.device(args.device), cache=cache))

        def cache_step() -> None:
            with record_function("vito.data"):
                batch = next(batches)
            train_step(state, batch["view_1"], batch["view_2"], batch.get("photometric"))

        results["cache"] = profile_steps(cache_step, args.profile_steps, args.device)
        print_profile(f"frame-cache views ({cache}, loader in this process)", results["cache"])

    print(
        f"\n== A/B, interleaved, median of {args.ab_repeats}+ (CPU time of this process on CPU; "
        "ratio = B / A, < 1: B faster)"
    )
    ab: dict[str, dict] = {}

    def report(name: str, a_s: float, b_s: float) -> None:
        ab[name] = {"a_ms": a_s * 1e3, "b_ms": b_s * 1e3, "ratio": b_s / a_s}
        print(f"  {name:52s} A {a_s * 1e3:9.2f} ms  B {b_s * 1e3:9.2f} ms  ratio {b_s / a_s:.3f}")

    # on a shared CPU, wall time mostly measures the neighbours: time the CPU this process used
    clock = time.perf_counter if args.device.startswith("cuda") else time.process_time

    def ab_pair(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float]:
        return interleaved(a, b, repeats, clock)

    # optimizer step alone, on the real parameter set and gradients of one step (same seed: same weights)
    (_, per_tensor), (_, multi) = make_state(args), make_state(args)
    for state_, foreach in ((per_tensor, False), (multi, True)):
        for group in state_.optimizer.param_groups:
            group["foreach"] = foreach
        train_step(state_, *views)  # leaves the gradients in place for the timed optimizer steps
    n_tensors = sum(len(g["params"]) for g in multi.optimizer.param_groups)
    report(
        f"LARS step: per-tensor (A) vs foreach (B), {n_tensors} tensors",
        *ab_pair(per_tensor.optimizer.step, multi.optimizer.step, args.ab_repeats * 4),
    )
    target, online = per_tensor.target, per_tensor.online.encoder
    decay = ema_decay(10, 1000, 0.996)
    report(
        "EMA: mul+add, per-buffer copies (A) vs lerp (B)",
        *ab_pair(
            lambda: ema_update_previous(target, online, decay),
            lambda: ema_update_(target, online, decay),
            args.ab_repeats * 4,
        ),
    )
    report(
        "whole step: LARS per-tensor (A) vs foreach (B)",
        *ab_pair(lambda: train_step(per_tensor, *views), lambda: train_step(multi, *views), args.ab_repeats),
    )

    images = torch.randn(2 * args.batch, 3, args.image_size, args.image_size, device=args.device)
    network = per_tensor.online

    def fwd_bwd(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            sum(p.float().square().mean() for p in model(x)).backward()
            synchronize(args.device)

        return run

    channels_last = copy.deepcopy(network).to(memory_format=torch.channels_last)
    report(
        "online fwd+bwd: contiguous (A) vs channels_last (B)",
        *ab_pair(
            fwd_bwd(network, images),
            fwd_bwd(channels_last, images.contiguous(memory_format=torch.channels_last)),
            args.ab_repeats,
        ),
    )
    del channels_last
    report(
        "online fwd+bwd: heads with BN (A) vs without (B)",
        *ab_pair(fwd_bwd(network, images), fwd_bwd(without_batchnorm(network), images), args.ab_repeats),
    )
    results["ab"] = ab
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
