"""The ``--model`` spec names, importable without torch: the CLI checks a spec before any work starts,
and importing :mod:`videonet_curate.models` (torchvision, timm) for three strings would cost its
driver ~3 CPU s that only the model actors need."""

from __future__ import annotations

DEFAULT_MODEL = "efficientnet-lite0"
OPENCLIP_PREFIX = "openclip:"
SPEC_HELP = (
    "efficientnet-lite0 (default, offline) | openclip:ARCH[:PRETRAINED_TAG_OR_CHECKPOINT_PATH] "
    "(e.g. openclip:ViT-B-32:laion2b_s34b_b79k, openclip:ViT-B-32:/path/to/ckpt.pt)"
)
