"""GPU training-step throughput, real data versus synthetic input (ResNet-50, 224 px, batch 256,
bf16, compiled), printed side by side as pairs/s and a ratio. For an H100; under 2 minutes.

Run from the repository root:
  PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src \
    python3 benchmarks/gpu_train_step.py --videos DIR_OF_SAMPLE_VIDEOS
Needs: torch, torchvision, timm, pyarrow, numpy, safetensors, pyyaml, tensorboard, tqdm (present on
the H100 image) and PyAV (not present: carry its manylinux wheel, e.g. av-18.x cp312, and install it
with pip --no-index), plus the sample videos (~/.cache/videonet-curate/samples/videos here).
Without a GPU it prints a note and exits 0 (so `make bench` passes); --device cpu with tiny flags
tests it on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402  (the shared measuring code beside this file)

GPU_DEFAULTS = {
    "preset": "paper-r50",
    "device": "cuda",
    "arch": "resnet50",
    "image_size": 224,
    "batch": 256,
    "workers": 15,
    "precision": "bf16",
    "compile": True,
    "warmup": 8,
    "steps": 20,
}

if __name__ == "__main__":
    wants_cpu = "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cpu"
    if not torch.cuda.is_available() and not wants_cpu:
        print("gpu_train_step: no CUDA device here; run it on a GPU machine (see the docstring)")
        sys.exit(0)
    train_step.main(defaults=GPU_DEFAULTS)
