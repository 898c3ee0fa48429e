"""The trainer's own step against a plain VITO-shaped reference step, side by side in one process.

The reference is the VITO-shaped step of ``shared/bench/gpu_anchors.py`` (torchvision ResNet, one
1x1-conv attention score per scale, one projector and predictor over the joined scales, InfoNCE of each
view's prediction against the EMA target of the other, SGD, ``_foreach_lerp_`` EMA), built here with
switches for each way the project's configuration differs, so each difference is timed on its own:

  reference             SGD, 1x1-conv attention scores, one projector/predictor over the joined scales
  + lars                the project's optimiser (vito_train.optim.build_lars) instead of SGD
  + two-layer attention Conv-ReLU-Conv scores (hidden = attention_hidden), as vito_train's AttentionPool
  + per-scale heads     a projector and a predictor per scale, the loss summed over scales
  + all three           the project's configuration in the plain step
  project               vito_train.loop.train_step (build_state from the config) on uint8 views already
                        on the device: normalisation, model, gathered loss, finite check, LARS, EMA

Figures (pairs/s; ratios to the reference measured in the same run): each variant eager; the reference
and the project also compiled (the headline ratio, goal >= 0.95); then a torch.profiler summary of
three project steps (regions of train_step and the top device ops). JSON under ``--out`` ($OUT).

  PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src python3 benchmarks/gpu_step_vs_reference.py
  python benchmarks/gpu_step_vs_reference.py --cpu-smoke     # tiny CPU run that tests the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for package in ("videonet-curate", "vito-train"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))

from vito_train.config import resolve_config  # noqa: E402
from vito_train.loop import build_state, train_step  # noqa: E402
from vito_train.optim import build_lars, set_learning_rate  # noqa: E402

GPU = {"arch": "resnet50", "size": 224, "batch": 256, "warmup": 4, "steps": 10, "device": "cuda"}
SMOKE = {"arch": "resnet18", "size": 64, "batch": 4, "warmup": 1, "steps": 2, "device": "cpu"}


class AttentionScorePool(nn.Module):
    """Softmax-over-positions pooling with a 1x1-conv score (hidden=0) or Conv-ReLU-Conv scores."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.score = (
            nn.Conv2d(channels, 1, 1)
            if hidden == 0
            else nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        w = self.score(f).flatten(2).float().softmax(-1)
        return (f.flatten(2).float() * w).sum(-1).to(f.dtype)


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class PlainEncoder(nn.Module):
    """ResNet trunk, attention pooling of the last two stages, projector(s)."""

    def __init__(self, arch: str, attention_hidden: int, per_scale: bool, hidden: int, dim: int) -> None:
        super().__init__()
        r = getattr(torchvision.models, arch)()
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        self.l4 = r.layer4
        c3, c4 = r.layer3[-1].conv1.in_channels, r.fc.in_features
        self.pools = nn.ModuleList(
            [AttentionScorePool(c3, attention_hidden), AttentionScorePool(c4, attention_hidden)]
        )
        self.per_scale = per_scale
        self.projectors = nn.ModuleList(
            [mlp(c3, hidden, dim), mlp(c4, hidden, dim)] if per_scale else [mlp(c3 + c4, hidden, dim)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.stem(x)
        pooled = [self.pools[0](c4), self.pools[1](self.l4(c4))]
        if not self.per_scale:
            pooled = [torch.cat(pooled, 1)]
        return [proj(v) for proj, v in zip(self.projectors, pooled, strict=True)]


def plain_step(
    p: dict, *, lars: bool, attention_hidden: int, per_scale: bool, heads: tuple[int, int], compile_: bool
) -> Callable[[], None]:
    """One VITO-shaped step as in gpu_anchors.py, with the chosen differences switched on."""
    dev, b, hidden, dim = p["device"], p["batch"], heads[0], heads[1]
    online = PlainEncoder(p["arch"], attention_hidden, per_scale, hidden, dim).to(dev)
    target = PlainEncoder(p["arch"], attention_hidden, per_scale, hidden, dim).to(dev)
    target.load_state_dict(online.state_dict())
    predictors = nn.ModuleList([mlp(dim, hidden, dim) for _ in online.projectors]).to(dev)
    memory_format = torch.channels_last if dev == "cuda" else torch.contiguous_format
    online, target = online.to(memory_format=memory_format), target.to(memory_format=memory_format)
    target.requires_grad_(False)
    model = nn.ModuleDict({"online": online, "predictors": predictors})
    if lars:
        optimizer = build_lars(model, weight_decay=1.5e-6, momentum=0.9, trust_coeff=0.001)
        set_learning_rate(optimizer, 0.2 * b / 256)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    views = torch.randn(2 * b, 3, p["size"], p["size"], device=dev).contiguous(memory_format=memory_format)
    on, tg = (torch.compile(online), torch.compile(target)) if compile_ else (online, target)
    labels = torch.arange(2 * b, device=dev)
    online_params, target_params = list(online.parameters()), list(target.parameters())
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(dev, dtype, enabled=dev == "cuda"):
            loss = 0.0
            queries = [pred(z) for pred, z in zip(predictors, on(views), strict=True)]
            with torch.no_grad():
                keys = tg(views)
            for q, k in zip(queries, keys, strict=True):
                q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1).roll(b, 0)  # view 1 <-> 2
                loss = loss + F.cross_entropy(q @ k.t() / 0.1, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(target_params, online_params, 0.004)

    return step


def project_step(p: dict, compile_: bool) -> tuple[Callable[[], None], object]:
    """``train_step`` of the paper-r50 configuration (arch and batch from ``p``) on device-resident views."""
    precision = "bf16" if p["device"] == "cuda" else "fp32"
    config = resolve_config(
        "paper-r50",
        [
            f"arch={p['arch']}",
            f"image_size={p['size']}",
            f"batch_size={p['batch']}",
            f"device={p['device']}",
            f"precision={precision}",
            f"compile={str(compile_).lower()}",
            f"channels_last={str(p['device'] == 'cuda').lower()}",
            "deterministic=false",
            "max_steps=10000",
            "warmup_steps=100",
        ],
    )
    state = build_state(config, torch.device(p["device"]))
    shape = (p["batch"], 3, p["size"], p["size"])
    views = [torch.randint(0, 256, shape, dtype=torch.uint8, device=p["device"]) for _ in range(2)]
    return (lambda: train_step(state, *views)), config


def pairs_per_s(step: Callable[[], None], p: dict) -> tuple[float, float]:
    """(pairs/s over the timed steps, seconds of the warm-up incl. compilation)."""
    sync = torch.cuda.synchronize if p["device"] == "cuda" else (lambda: None)
    start = time.perf_counter()
    for _ in range(p["warmup"]):
        step()
    sync()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(p["steps"]):
        step()
    sync()
    return p["steps"] * p["batch"] / (time.perf_counter() - start), warm


def profile_summary(step: Callable[[], None], p: dict, top: int = 15) -> dict:
    """Regions of train_step (record_function marks) and the top ops by self device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = p["device"] == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    steps = 3
    step()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()

    def device_ms(e) -> float:  # noqa: ANN001 - a profiler FunctionEventAvg
        return (getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total) / 1e3 / steps

    ops = sorted((e for e in events if not e.key.startswith("vito.")), key=device_ms, reverse=True)
    total = sum(device_ms(e) for e in ops)
    regions = {
        e.key: {
            "cpu_ms": e.cpu_time_total / 1e3 / steps,
            "device_ms": getattr(e, "device_time_total", 0) / 1e3 / steps,
        }
        for e in events
        if e.key.startswith("vito.")
    }
    table = prof.key_averages().table(
        sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=top
    )
    return {
        "clock": "device (CUDA) self time" if cuda else "CPU self time",
        "total_ms_per_step": total,
        "regions": regions,
        "top_ops": [
            {"op": e.key, "ms_per_step": device_ms(e), "share": device_ms(e) / max(total, 1e-9)}
            for e in ops[:top]
        ],
        "table": table,
    }


def main() -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run that tests the script")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")))
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled pair")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    smoke = args.cpu_smoke or os.environ.get("VITO_GPU_SMOKE") == "1"
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (use --cpu-smoke to test the script)")
        return {}
    p = dict(SMOKE if smoke else GPU)
    if args.steps:
        p["steps"] = args.steps
    if p["device"] == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    heads = (4096, 256) if not smoke else (64, 32)
    attention_hidden = 512 if not smoke else 16
    result: dict = {
        "device": torch.cuda.get_device_name() if p["device"] == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "setup": dict(p, heads=heads, attention_hidden=attention_hidden),
        "eager_pairs_per_s": {},
    }
    path = args.out / "step_vs_reference.json"

    def record(key: str, value: object) -> None:
        result[key] = value
        path.write_text(json.dumps(result, indent=1, default=str))

    variants = {
        "reference": {"lars": False, "attention_hidden": 0, "per_scale": False},
        "reference+lars": {"lars": True, "attention_hidden": 0, "per_scale": False},
        "reference+two_layer_attention": {
            "lars": False,
            "attention_hidden": attention_hidden,
            "per_scale": False,
        },
        "reference+per_scale_heads": {"lars": False, "attention_hidden": 0, "per_scale": True},
        "reference+all_three": {"lars": True, "attention_hidden": attention_hidden, "per_scale": True},
    }
    eager = result["eager_pairs_per_s"]
    for name, switches in variants.items():
        eager[name], _ = pairs_per_s(plain_step(p, heads=heads, compile_=False, **switches), p)
        share = eager[name] / eager["reference"]
        print(f"{name:32s} eager {eager[name]:9.1f} pairs/s  ({share:.3f} x reference)")
        record("eager_pairs_per_s", eager)
        if p["device"] == "cuda":
            torch.cuda.empty_cache()
    step, _ = project_step(p, compile_=False)
    eager["project"], _ = pairs_per_s(step, p)
    ref = eager["reference"]
    record(
        "eager_ratios",
        {
            "project / reference (goal >= 0.95)": eager["project"] / ref,
            "project / reference+all_three (trainer overhead beyond the configuration)": eager["project"]
            / eager["reference+all_three"],
            **{
                f"{k} / reference (cost of the difference)": v / ref
                for k, v in eager.items()
                if k.startswith("reference+")
            },
        },
    )
    print(
        f"{'project':32s} eager {eager['project']:9.1f} pairs/s  ({eager['project'] / ref:.3f} x reference)"
    )
    record("profile_project_eager", profile_summary(step, p))
    (args.out / "profile_project.txt").write_text(result["profile_project_eager"]["table"])
    del step
    if not args.no_compile and p["device"] == "cuda":
        compiled: dict = {}
        for name, build in (
            ("reference", lambda: plain_step(p, heads=heads, compile_=True, **variants["reference"])),
            ("project", lambda: project_step(p, compile_=True)[0]),
        ):
            try:
                rate, warm = pairs_per_s(build(), p)
                compiled[name] = {"pairs_per_s": rate, "warmup_incl_compile_s": warm}
            except Exception as exc:  # a compile failure is a finding, not the end of the run
                compiled[name] = {"error": repr(exc)[:400]}
            record("compiled", compiled)
            torch.cuda.empty_cache()
        if all("pairs_per_s" in v for v in compiled.values()):
            ratio = compiled["project"]["pairs_per_s"] / compiled["reference"]["pairs_per_s"]
            record("compiled_ratio_project_over_reference", ratio)
            print(f"compiled: project / reference = {ratio:.3f} (goal >= 0.95)")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("profile")}, indent=1, default=str))
    print(result["profile_project_eager"]["table"])
    return result


if __name__ == "__main__":
    main()
