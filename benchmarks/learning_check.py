"""Does the trainer learn? Pretrain, then probe side by side with random initialisation.

Image mode: `vito-train run --images fashion-mnist:DIR --preset learn-check-cpu` (ResNet-10 at 32 px,
a fixed budget of ``max_steps`` x ``batch_size`` pairs; the online kNN monitor on), then
`vito-eval probe` on the Fashion-MNIST test split with the trained encoder and `random:ARCH` of the run's
architecture (torchvision's initialisation) at the run's image size. Video mode (``--modes`` has video):
the same preset and budget on the real sample clips (`videonet-curate build` -> `vito-train prepare`
-> `vito-train run --cache`), probed the same way. Every step is the command a user would type.

The last line is ``trained-minus-random linear +X.X knn20 +Y.Y`` (image mode, percentage points).
Exit status (with image mode): 0 when image mode beats random init by at least --goal points on both
linear and kNN-20 top-1; 1 when it ran to the end but missed the goal (so `make bench` notices); 2 on
bad input or a command that failed. Video mode is reported whatever it shows and does not change the
exit status.

    python benchmarks/learning_check.py [--fashion-mnist DIR] [--videos DIR] [--out DIR] [--steps N]
                                        [--set KEY=VALUE ...]

``--set`` passes config overrides to `vito-train run` (e.g. ``image_size=64``); the probe then runs both
encoders at the image size the run was trained at (read from its config.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache/videonet-curate/samples"))
BIN = Path(sys.executable).parent
PRESET = "learn-check-cpu"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run one command (output to ``log``); (wall seconds, CPU seconds of it and its loader workers).
    On a shared machine the CPU seconds say what an idle one would take: the trainer runs one torch
    thread and one loader worker, so on 2 idle cores its wall time is about its main process's CPU
    time, at most the total. Exit 2 naming the log on failure."""
    print("$ " + "".join(f"{k}={v} " for k, v in (env or {}).items()) + " ".join(cmd), flush=True)
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    with open(log, "w") as handle:
        code = subprocess.call(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    if code not in (0, 1):  # 1: done, outputs complete, some rows/clips failed (README, "Exit codes")
        print(f"error: {cmd[0]} exited {code}; see {log}", file=sys.stderr)
        sys.exit(2)
    return time.perf_counter() - started, children_cpu_seconds() - cpu_started


def train_args(args: argparse.Namespace) -> list[str]:
    overrides = ([f"max_steps={args.steps}"] if args.steps else []) + list(args.set)
    return ["--preset", PRESET, "--no-progress"] + [part for o in overrides for part in ("--set", o)]


def probe(run_dir: Path, dataset: str, out: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Linear and kNN-20 top-1 (percent) of the trained run and of random init of the same architecture,
    one probe call, both at the image size the run trained at."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    image_size, arch = config["image_size"], config["arch"]
    cmd = [str(BIN / "vito-eval"), "probe", "--encoder", str(run_dir), "--encoder", f"random:{arch}"]
    cmd += ["--dataset", dataset, "--image-size", str(image_size), "--out", str(out)]
    cmd += ["--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit)]
    # a cache of its own: every check extracts both encoders' features, so its probe time is a cold one
    cmd += ["--cache-dir", str(out.with_suffix(".features"))]
    # one OpenMP thread: on 2 cores shared with other jobs, two threads extracted 17-20 images/s and one
    # thread 70 (measured 2026-12-01, load ~17)
    seconds, cpu_seconds = run(cmd, out.with_suffix(".log"), env={"OMP_NUM_THREADS": "1"})
    results = json.loads(out.read_text())["results"]
    figures = {}
    for name, result in zip(("trained", "random"), results, strict=True):
        figures[name] = {
            "linear": 100 * result["linear"]["top1"],
            "knn20": 100 * result["knn"]["k20"]["top1"],
        }
    figures["probe_seconds"], figures["probe_cpu_seconds"] = seconds, cpu_seconds
    figures["image_size"], figures["arch"] = image_size, arch
    return figures


def monitor_curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [(r["step"], round(r["knn20_top1"], 1)) for r in rows if "knn20_top1" in r]


def report(mode: str, figures: dict) -> None:
    t, r, arch = figures["trained"], figures["random"], figures["arch"]
    print(
        f"\n{mode}, {arch} at {figures['image_size']} px: {figures['pairs']:,} pairs in "
        f"{figures['train_seconds']:.0f} s of training "
        f"({figures['train_cpu_seconds']:.0f} CPU s); probe {figures['probe_seconds']:.0f} s "
        f"({figures['probe_cpu_seconds']:.0f} CPU s)"
    )
    print(f"  {'encoder':<24} {'linear top-1':>12} {'kNN-20 top-1':>12}")
    print(f"  {'trained (' + arch + ')':<24} {t['linear']:>12.1f} {t['knn20']:>12.1f}")
    print(f"  {'random:' + arch:<24} {r['linear']:>12.1f} {r['knn20']:>12.1f}")
    print(f"  {'difference':<24} {t['linear'] - r['linear']:>+12.1f} {t['knn20'] - r['knn20']:>+12.1f}")
    if figures.get("monitor"):
        print("  online kNN monitor (step, kNN-20 top-1):", figures["monitor"])


def image_mode(args: argparse.Namespace, dataset: str) -> dict:
    run_dir = args.out / "image-run"
    cmd = [str(BIN / "vito-train"), "run", "--images", dataset, "--out", str(run_dir), "--monitor", dataset]
    seconds = run(cmd + train_args(args), args.out / "image-run.log")
    figures = probe(run_dir, dataset, args.out / "image-probe.json", args)
    return {**figures, **run_facts(run_dir, *seconds), "monitor": monitor_curve(run_dir)}


def video_mode(args: argparse.Namespace, dataset: str) -> dict:
    curated, cache, run_dir = args.out / "curated", args.out / "video-cache", args.out / "video-run"
    build = [str(BIN / "videonet-curate"), "build", "--source", "local", "--input", str(args.videos)]
    run(build + ["--out", str(curated), "--no-ray"], args.out / "curate.log")
    prepare = [str(BIN / "vito-train"), "prepare", "--manifest", str(curated), "--out", str(cache)]
    run(prepare + ["--short-side", "48", "--workers", "1"], args.out / "prepare.log")
    cmd = [str(BIN / "vito-train"), "run", "--cache", str(cache), "--out", str(run_dir), "--monitor", dataset]
    seconds = run(cmd + train_args(args), args.out / "video-run.log")
    figures = probe(run_dir, dataset, args.out / "video-probe.json", args)
    kept = json.loads((curated / "summary.json").read_text()).get("kept")  # clips curation kept
    return {**figures, **run_facts(run_dir, *seconds), "monitor": monitor_curve(run_dir), "kept_clips": kept}


def run_facts(run_dir: Path, wall_seconds: float, cpu_seconds: float) -> dict:
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {
        "train_seconds": wall_seconds,
        "train_cpu_seconds": cpu_seconds,
        "steps": config["max_steps"],
        "batch_size": config["batch_size"],
        "pairs": config["max_steps"] * config["batch_size"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fashion-mnist", type=Path, default=SAMPLES / "fashion-mnist")
    parser.add_argument("--videos", type=Path, default=SAMPLES / "videos")
    parser.add_argument("--out", type=Path, default=Path("out/learning-check"))
    parser.add_argument("--steps", type=int, default=None, help="Override the preset's max_steps.")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config override for `vito-train run` (repeatable), e.g. image_size=64.",
    )
    parser.add_argument("--train-limit", type=int, default=5000, help="Probe: labelled training images.")
    parser.add_argument("--test-limit", type=int, default=5000, help="Probe: test images (of 10,000).")
    parser.add_argument("--goal", type=float, default=3.0, help="Points over random init, both metrics.")
    parser.add_argument(
        "--modes",
        default="image,video",
        help="image, video or both (comma-separated); the last line and the exit status need image mode.",
    )
    args = parser.parse_args()
    if not (args.fashion_mnist / "train-images-idx3-ubyte.gz").is_file():
        print(f"error: no Fashion-MNIST under {args.fashion_mnist}; run `videonet-curate samples fetch`")
        return 2
    modes = {m.strip() for m in args.modes.split(",")}
    if not modes or modes - {"image", "video"}:
        print(f"error: --modes {args.modes!r}: expected image, video or image,video")
        return 2
    if "video" in modes and not args.videos.is_dir():
        print(
            f"error: no sample videos under {args.videos}; "
            "run `videonet-curate samples fetch` or pass --modes image"
        )
        return 2
    if args.out.exists():  # a check is a fresh run, never a resume of an older one
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    dataset = f"fashion-mnist:{args.fashion_mnist}"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    results: dict = {}
    if "image" in modes:
        results["image"] = image_mode(args, dataset)
    if "video" in modes:
        results["video"] = video_mode(args, dataset)
    results["load_average_at_end"] = os.getloadavg()[0]
    (args.out / "learning_check.json").write_text(json.dumps(results, indent=1))
    if "video" in results:
        report(f"video mode (sample clips, {results['video']['kept_clips']} kept)", results["video"])
    if "image" not in results:
        return 0
    report("image mode (Fashion-MNIST train, two views of one image)", results["image"])
    t, r = results["image"]["trained"], results["image"]["random"]
    d_linear, d_knn = t["linear"] - r["linear"], t["knn20"] - r["knn20"]
    print(f"trained-minus-random linear {d_linear:+.1f} knn20 {d_knn:+.1f}")
    return 0 if min(d_linear, d_knn) >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
