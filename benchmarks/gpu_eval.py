"""Evaluation at GPU speed (issue 17, items 3 and 4), fp32 and bf16 side by side in one run:

1. `vito-eval davis` with the CRW preset on a DAVIS-sized synthetic sequence (480p, 80 frames, several
   textured objects moving over a textured background, written in the DAVIS-2017 layout): frames/s of
   encoder forward + label propagation, peak memory, and J&F in each precision;
2. `segment` feature extraction (`segmentation.iter_dense` over JPEGs at 448 px) and 3. `probe` feature
   extraction (`features.extract_features` at 224 px): images/s of the encoder forward, peak memory, and
   the min cosine similarity of bf16 to fp32 features;
4. dedup of 1M x 512 planted embeddings (`videonet_curate.dedup.find_duplicates`, the `build` step) with
   faiss on the GPU against the CPU (the CPU figure in benchmarks/RESULTS.md was 79.5 s on 2 cores);
   the GPU half needs a GPU build of faiss (README: faiss on the GPU) and is reported as skipped without.

Every part adds its figures to ``--json`` as soon as it ends, so a run cut short keeps what it measured.
Run on a GPU machine from the repository root (benchmarks/gpu_all.sh does):
    PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src \
        python3 benchmarks/gpu_eval.py --json $OUT/gpu_eval.json
Tiny CPU check (what the tests cannot afford, in about a minute):
    .venv/bin/python benchmarks/gpu_eval.py --device cpu --height 64 --width 96 --frames 6 \
        --seg-images 4 --seg-size 64 --probe-images 8 --probe-size 32 --dedup-rows 20000 --json /tmp/e.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# Each part imports what it needs itself, so a package missing on the GPU machine fails that part only.
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where the figures go (JSON)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    parser.add_argument("--encoder", default="random:resnet50", help="VITO's architecture; no weights needed")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--seg-images", type=int, default=64)
    parser.add_argument("--seg-size", type=int, default=448)
    parser.add_argument("--seg-batch", type=int, default=16)
    parser.add_argument("--probe-images", type=int, default=1024)
    parser.add_argument("--probe-size", type=int, default=224)
    parser.add_argument("--probe-batch", type=int, default=256)
    parser.add_argument("--dedup-rows", type=int, default=1_000_000, help="0 skips the dedup timing")
    parser.add_argument("--dedup-dim", type=int, default=512)
    parser.add_argument("--skip-dedup-cpu", action="store_true", help="time dedup on the GPU only")
    return parser.parse_args(argv)


def smooth_texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """A colour texture: random colours on a coarse grid, bilinearly upsampled (uint8, H x W x 3)."""
    coarse = rng.integers(0, 256, (max(2, height // cell), max(2, width // cell), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def write_davis_sequence(
    root: Path, height: int, width: int, frames: int, objects: int, seed: int = 0
) -> None:
    """One sequence ``synthetic`` in the DAVIS-2017 layout: textured rectangles crossing a textured
    background at constant speeds, labels 1..objects, every frame annotated."""
    from vito_eval.datasets.davis import default_palette, write_index_png

    rng = np.random.default_rng(seed)
    background = smooth_texture(rng, height, width, 24)
    boxes = []
    for _ in range(objects):
        h, w = int(rng.integers(height // 6, height // 3)), int(rng.integers(width // 8, width // 4))
        y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        vy, vx = rng.uniform(-1, 1, 2) * np.array([(height - h) / frames, (width - w) / frames]) / 2
        boxes.append((smooth_texture(rng, h, w, 6), y0, x0, vy, vx))
    img_dir, ann_dir = root / "JPEGImages" / "480p" / "synthetic", root / "Annotations" / "480p" / "synthetic"
    img_dir.mkdir(parents=True, exist_ok=True)
    palette = default_palette()
    for t in range(frames):
        frame, labels = background.copy(), np.zeros((height, width), np.uint8)
        for obj, (patch, y0, x0, vy, vx) in enumerate(boxes, start=1):
            h, w = patch.shape[:2]
            y = int(np.clip(round(y0 + vy * t), 0, height - h))
            x = int(np.clip(round(x0 + vx * t), 0, width - w))
            frame[y : y + h, x : x + w] = patch
            labels[y : y + h, x : x + w] = obj
        Image.fromarray(frame).save(img_dir / f"{t:05d}.jpg", quality=90)
        write_index_png(ann_dir / f"{t:05d}.png", labels, palette)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("synthetic\n")


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def bench_davis(args: argparse.Namespace, device: str, work: Path) -> dict[str, Any]:
    from vito_eval.davis import DavisEvalConfig, run_davis_eval

    root = work / "DAVIS"
    start = time.perf_counter()
    write_davis_sequence(root, args.height, args.width, args.frames, args.objects)
    out: dict[str, Any] = {
        "sequence": f"{args.width}x{args.height}, {args.frames} frames, {args.objects} objects"
    }
    out["write_s"] = round(time.perf_counter() - start, 2)
    for precision in PRECISIONS:
        config = DavisEvalConfig(
            encoder=args.encoder,
            root=root,
            out=work / f"davis-{precision}",
            preset="crw",
            n_overlay_frames=0,
            device=device,
            precision=precision,
        )
        result = run_davis_eval(config)
        out[precision] = {"jf_mean": result["metrics"]["jf_mean"], **result["throughput"]}
        print(f"davis {precision}: {out[precision]}", flush=True)
    out["bf16_jf_minus_fp32"] = out["bf16"]["jf_mean"] - out["fp32"]["jf_mean"]
    out["bf16_speedup"] = out["bf16"]["frames_per_second"] / out["fp32"]["frames_per_second"]
    return out


def bench_segment(args: argparse.Namespace, device: str, work: Path) -> dict[str, Any]:
    from vito_eval.encoders import load_encoder
    from vito_eval.runtime import start_throughput
    from vito_eval.segmentation import iter_dense

    rng = np.random.default_rng(1)
    pairs = []
    for i in range(args.seg_images):
        path = work / "seg" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_texture(rng, 375, 500, 16)).save(path, quality=90)  # VOC-sized images
        pairs.append((path, path))
    out: dict[str, Any] = {"images": args.seg_images, "image_size": args.seg_size, "stage": 4}
    feats = {}
    for precision in PRECISIONS:
        encoder = load_encoder(args.encoder, device=device, precision=precision)

        def dense(x: torch.Tensor, encoder=encoder) -> torch.Tensor:
            return encoder.dense(x, stage=4)

        next(iter_dense(dense, pairs, args.seg_size, args.seg_batch))  # warm-up (autotuning, allocations)
        meter = start_throughput(device, "images", measures="encoder forward (segment)")
        stream = iter_dense(dense, pairs, args.seg_size, args.seg_batch, throughput=meter)
        feats[precision] = torch.stack([f for _, f in stream]).numpy()
        out[precision] = meter.report()
        print(f"segment {precision}: {out[precision]}", flush=True)
    out["bf16_feature_cosine_min"] = cosine_min(feats["fp32"], feats["bf16"])
    out["bf16_speedup"] = out["bf16"]["images_per_second"] / out["fp32"]["images_per_second"]
    return out


def bench_probe(args: argparse.Namespace, device: str) -> dict[str, Any]:
    from vito_eval.datasets.base import ImageSplit
    from vito_eval.encoders import load_encoder
    from vito_eval.features import extract_features
    from vito_eval.runtime import start_throughput

    rng = np.random.default_rng(2)
    pixels = np.stack([smooth_texture(rng, 256, 256, 16) for _ in range(args.probe_images)])
    split = ImageSplit(labels=np.zeros(len(pixels), np.int64), pixels=pixels)
    out: dict[str, Any] = {"images": args.probe_images, "image_size": args.probe_size}
    feats = {}
    for precision in PRECISIONS:
        encoder = load_encoder(args.encoder, device=device, precision=precision)
        extract_features(encoder, split.subset(np.arange(min(8, len(split)))), args.probe_size)  # warm-up
        meter = start_throughput(device, "images", measures="encoder forward (probe)")
        start = time.perf_counter()
        feats[precision] = extract_features(
            encoder,
            split,
            args.probe_size,
            args.probe_batch,
            num_workers=min(4, os.cpu_count() or 1),
            throughput=meter,
        )
        wall = time.perf_counter() - start
        out[precision] = {**meter.report(), "images_per_second_with_decoding": round(len(split) / wall, 2)}
        print(f"probe {precision}: {out[precision]}", flush=True)
    out["bf16_feature_cosine_min"] = cosine_min(feats["fp32"], feats["bf16"])
    out["bf16_speedup"] = out["bf16"]["images_per_second"] / out["fp32"]["images_per_second"]
    return out


def bench_dedup(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    from rebalance_dedup import planted_embeddings, planted_recall  # benchmarks/, on sys.path

    from videonet_curate.dedup import find_duplicates

    start = time.perf_counter()
    x, group_of = planted_embeddings(args.dedup_rows, args.dedup_dim, seed=0)
    scores = np.random.default_rng(1).random(args.dedup_rows)
    out: dict[str, Any] = {
        "rows": args.dedup_rows,
        "dim": args.dedup_dim,
        "faiss": getattr(faiss, "__version__", "?"),
        "faiss_gpus": int(faiss.get_num_gpus()),
        "generate_s": round(time.perf_counter() - start, 2),
    }
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    sides = [("gpu", True)] if has_gpu else []
    if not args.skip_dedup_cpu:
        sides.append(("cpu", False))
    if not has_gpu:
        out["gpu"] = "not measured: this faiss is not a GPU build or sees no GPU (README: faiss on the GPU)"
    for side, use_gpu in sides:
        start = time.perf_counter()
        result = find_duplicates(x, scores, 0.95, exact_max=0, use_gpu=use_gpu)
        seconds = time.perf_counter() - start
        recall, false_marks = planted_recall(result.dup_of, group_of)
        out[side] = {
            "seconds": round(seconds, 2),
            "duplicates": int(result.num_duplicates),
            "planted_recall": round(recall, 5),
            "false_marks": false_marks,
        }
        print(f"dedup {side}: {out[side]}", flush=True)
    if "gpu" in out and "cpu" in out and isinstance(out["gpu"], dict):
        out["gpu_speedup"] = out["cpu"]["seconds"] / out["gpu"]["seconds"]
    return out


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} ({platform.node()}, {os.cpu_count()} cores)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), CPU"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    report: dict[str, Any] = {
        "machine": machine(device),
        "torch": torch.__version__,
        "encoder": args.encoder,
        "device": device,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp, args.json)

    with tempfile.TemporaryDirectory(prefix="gpu-eval-") as tmp:
        work = Path(tmp)
        for name, part in (
            ("davis_crw", lambda: bench_davis(args, device, work)),
            ("segment_features", lambda: bench_segment(args, device, work)),
            ("probe_features", lambda: bench_probe(args, device)),
            ("dedup", lambda: bench_dedup(args) if args.dedup_rows > 0 else "skipped (--dedup-rows 0)"),
        ):
            start = time.perf_counter()
            try:
                report[name] = part()
            except Exception as exc:  # one part failing must not lose the others' figures
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{name} failed: {exc}", file=sys.stderr, flush=True)
            print(f"== {name} done in {time.perf_counter() - start:.1f} s", flush=True)
            save()
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
