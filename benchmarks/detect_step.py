"""Mask R-CNN training step: built by `vito-eval detect` from a VITO export vs torchvision's own R50-FPN.

Side by side in one process, same inputs: (a) a ResNet-50 goes through the real export path (a vito-train
checkpoint -> `vito_train.export.export` -> `vito_eval.encoders.load_encoder` ->
`vito_eval.detect.model.build_mask_rcnn` with the 1x schedule's model settings), (b)
`torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`, which with no
weights trains BatchNorm and every stage (torchvision falls back to 5 trainable layers). Steps alternate
(a, b, a, b, ...) after warm-up, each with the same seed and batch, and the script prints the median step
time of each and their ratio torchvision / VITO-built (goal >= 0.95: building from an export costs nothing).
On a GPU it also prints images/s at batch 16 in bf16 autocast.

    python benchmarks/detect_step.py [--size 320] [--batch 2] [--steps 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torchvision


def vito_export(tmp: Path) -> Path:
    """A vito-train checkpoint holding a ResNet-50, exported as `vito-train export` does."""
    from vito_train.checkpoint import save_checkpoint
    from vito_train.export import export

    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    online = {
        f"encoder.backbone.resnet.{k}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")
    }
    save_checkpoint(
        tmp / "last.pt", {"online": online, "config": {}, "arch": "resnet50", "pooling": "gap", "step": 0}
    )
    export(tmp, tmp / "r50.safetensors", "torchvision")
    return tmp / "r50.safetensors"


def build_models(export_path: Path, size: int, num_classes: int):
    from vito_eval.detect.config import SCHEDULE_1X
    from vito_eval.detect.model import build_mask_rcnn
    from vito_eval.encoders import load_encoder

    schedule = replace(SCHEDULE_1X, train_sizes=(size,), test_size=size)  # one size: same work per step
    ours = build_mask_rcnn(load_encoder(str(export_path)), num_classes, schedule, 100, 0.05)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes + 1,
        min_size=size,
        max_size=SCHEDULE_1X.max_size,
    )
    return ours, theirs


def make_batch(batch: int, size: int, num_classes: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g).to(device))
        boxes = []
        for _ in range(4):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            w, h = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            boxes.append([x0, y0, x0 + w, y0 + h])
        b = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(4, size, size, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, y0:y1, x0:x1] = 1
        targets.append(
            {
                "boxes": b.to(device),
                "labels": torch.randint(1, num_classes + 1, (4,), generator=g).to(device),
                "masks": masks.to(device),
            }
        )
    return images, targets


def step_time(model, optimizer, images, targets, device, dtype) -> float:
    torch.manual_seed(2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def compare(ours, theirs, batch, size, steps, device, dtype, num_classes):
    images, targets = make_batch(batch, size, num_classes, device)
    timings = {"vito": [], "torchvision": []}
    models = {"vito": ours.to(device).train(), "torchvision": theirs.to(device).train()}
    optims = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    for k in models:  # warm-up
        step_time(models[k], optims[k], images, targets, device, dtype)
    for _ in range(steps):
        for k in models:
            timings[k].append(step_time(models[k], optims[k], images, targets, device, dtype))
    return {k: statistics.median(v) for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=320, help="CPU: image side (GPU uses 800)")
    parser.add_argument("--batch", type=int, default=2, help="CPU batch (GPU uses 16)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_classes = 80
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = build_models(vito_export(Path(tmp)), args.size, num_classes)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(f"parameters: VITO-built {n_ours:,}  torchvision {n_theirs:,}")
    cpu = compare(ours, theirs, args.batch, args.size, args.steps, torch.device("cpu"), None, num_classes)
    print(
        f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads), batch {args.batch}, "
        f"{args.size}px, fp32: VITO-built {cpu['vito']:.3f} s/step, torchvision {cpu['torchvision']:.3f} s/step, "
        f"ratio torchvision/VITO-built = {cpu['torchvision'] / cpu['vito']:.3f} (goal >= 0.95)"
    )
    if torch.cuda.is_available():
        gpu = compare(ours, theirs, 16, 800, args.steps, torch.device("cuda"), torch.bfloat16, num_classes)
        name = torch.cuda.get_device_name()
        print(
            f"GPU {name}, batch 16, 800px, bf16: VITO-built {16 / gpu['vito']:.1f} img/s, torchvision "
            f"{16 / gpu['torchvision']:.1f} img/s, ratio {gpu['torchvision'] / gpu['vito']:.3f}"
        )
    else:
        print("GPU: not measured (no GPU here); benchmarks/gpu_all.sh runs this script on the device machine")


if __name__ == "__main__":
    main()
