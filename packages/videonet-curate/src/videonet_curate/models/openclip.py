"""open_clip scorers: image embeddings against zero-shot text prototypes of the ImageNet-1k class names.

Spec ``openclip:ARCH[:PRETRAINED]``; ``PRETRAINED`` is an open_clip tag (``laion2b_s34b_b79k``), a
checkpoint path, or absent (random init: tests only). Prototypes are exactly open_clip's
``build_zero_shot_classifier`` over ``IMAGENET_CLASSNAMES`` with its 80 OpenAI or 7 simple templates:
per class, the mean of the L2-normalised prompt embeddings, re-normalised. Logits are
``logit_scale · ê Pᵀ`` with ``ê`` the normalised image embedding and the model's own logit scale
(100 for the released CLIP weights). Duplicated names (missile, sunglasses) give identical prototype rows:
see :mod:`videonet_curate.imagenet` for how labels are assigned then.

Offline: a tag whose weights are in the local Hugging Face / open_clip cache loads from there without
touching the network; one that is not cached fails at once with :class:`PretrainedWeightsUnavailableError`
when ``HF_HUB_OFFLINE`` is set or the hub cannot be reached within a few seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from videonet_curate.imagenet import IMAGENET_CLASSNAMES, NUM_CLASSES
from videonet_curate.models import prototype_cache
from videonet_curate.models.base import (
    ImageNetScorer,
    ModelError,
    PreprocessSpec,
    UnknownModelError,
)
from videonet_curate.storage import file_sha256

logger = logging.getLogger(__name__)

PREFIX = "openclip:"
TEMPLATE_SETS = {
    "openai": ("openai-80-templates", open_clip.OPENAI_IMAGENET_TEMPLATES),
    "simple": ("simple-7-templates", open_clip.SIMPLE_IMAGENET_TEMPLATES),
}
RANDOM_INIT_SEED = 0
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class PretrainedWeightsUnavailableError(ModelError):
    """An open_clip pretrained tag whose weights are not cached and cannot be downloaded now."""


@dataclass(frozen=True)
class OpenClipSpec:
    arch: str
    tag: str | None = None  # an open_clip pretrained tag
    checkpoint: Path | None = None  # a local checkpoint file

    @property
    def random_init(self) -> bool:
        return self.tag is None and self.checkpoint is None


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith(("~", ".")) or value.endswith(_CHECKPOINT_SUFFIXES)


def parse_openclip_spec(spec: str) -> OpenClipSpec:
    """``openclip:ARCH[:TAG_OR_PATH]`` -> :class:`OpenClipSpec`, checking the arch, tag and file exist."""
    if not spec.startswith(PREFIX):
        raise UnknownModelError(f"{spec!r} is not an open_clip spec (openclip:ARCH[:PRETRAINED])")
    arch, _, weights = spec[len(PREFIX) :].partition(":")
    if arch not in open_clip.list_models():
        raise UnknownModelError(
            f"unknown open_clip architecture {arch!r} in {spec!r}; "
            f"known: {', '.join(open_clip.list_models())}"
        )
    if not weights:
        return OpenClipSpec(arch)
    if _looks_like_path(weights) or Path(weights).expanduser().is_file():
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"checkpoint {path} (from {spec!r}) does not exist: pass an existing file")
        return OpenClipSpec(arch, checkpoint=path)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise UnknownModelError(
            f"{arch} has no pretrained tag {weights!r}; known tags: {', '.join(tags) or 'none'}; "
            "or pass a checkpoint path: openclip:ARCH:/path/to/ckpt.pt"
        )
    return OpenClipSpec(arch, tag=weights)


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout_s: float = 3.0) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or a TCP connection to the hub fails within ``timeout_s``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def cached_pretrained_file(arch: str, tag: str, *, weights_cache_dir: str | None = None) -> str | None:
    """The local file open_clip would load for ``arch``/``tag``, if it is already cached (no network)."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        candidates = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
        if filename.endswith((".bin", ".pth")) and filename != HF_WEIGHTS_NAME:
            candidates.append(filename[:-4] + ".safetensors")
        for name in [*candidates, filename]:
            found = try_to_load_from_cache(repo_id, name, cache_dir=weights_cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if cfg.get("url"):
        url_cache = weights_cache_dir or os.path.expanduser("~/.cache/clip")  # open_clip's default
        path = os.path.join(url_cache, os.path.basename(cfg["url"]))
        return path if os.path.isfile(path) else None
    return None


def _preprocess_keys(cfg: dict) -> dict:
    return {k: cfg[k] for k in ("size", "mean", "std", "interpolation", "resize_mode") if k in cfg}


def create_openclip_model(
    spec: OpenClipSpec, *, weights_cache_dir: str | None = None
) -> tuple[torch.nn.Module, str]:
    """The open_clip model for ``spec`` in eval mode, and the identity of its weights."""
    if spec.random_init:
        msg = f"openclip:{spec.arch} has no pretrained weights: random initialisation (for tests only)"
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)
        with torch.random.fork_rng(devices=[]):  # same weights every time, caller's RNG untouched
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(spec.arch, pretrained=None, pretrained_text=False)
        return model.eval(), f"random-init-seed{RANDOM_INIT_SEED}"
    if spec.checkpoint is not None:
        model = open_clip.create_model(spec.arch, pretrained=str(spec.checkpoint))
        return model.eval(), f"sha256-{file_sha256(spec.checkpoint)[:16]}"
    assert spec.tag is not None
    local = cached_pretrained_file(spec.arch, spec.tag, weights_cache_dir=weights_cache_dir)
    if local is not None:
        # load the cached file directly: the hub client would otherwise retry the network for ~45 s
        tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.tag)
        model = open_clip.create_model(
            spec.arch, pretrained=local, force_preprocess_cfg=_preprocess_keys(tag_cfg) or None
        )
        return model.eval(), spec.tag
    if not hub_reachable():
        raise PretrainedWeightsUnavailableError(
            f"open_clip weights {spec.arch}:{spec.tag} are not in the local cache and the network is "
            f"unavailable (HF_HUB_OFFLINE set or huggingface.co unreachable). Either pass a local checkpoint "
            f"(--model openclip:{spec.arch}:/path/to/checkpoint.pt), run once with network access to cache "
            "the weights, or use the offline default --model efficientnet-lite0."
        )
    model = open_clip.create_model(spec.arch, pretrained=spec.tag, cache_dir=weights_cache_dir)
    return model.eval(), spec.tag


def _preprocess_spec(model: torch.nn.Module) -> PreprocessSpec:
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    if isinstance(size, list | tuple):
        if size[0] != size[1]:
            raise ModelError(f"non-square open_clip input size {size} is not supported")
        size = size[0]
    return PreprocessSpec(
        size=int(size),
        crop_pct=1.0,  # open_clip's eval transform: Resize(shorter side = size) + CenterCrop(size)
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
    )


def build_text_prototypes(
    model: torch.nn.Module,
    tokenizer,
    class_indices: Sequence[int],
    templates: str,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """open_clip's zero-shot classifier for the ImageNet classes ``class_indices``, as rows (K, D)."""
    names = [IMAGENET_CLASSNAMES[i] for i in class_indices]
    weights = open_clip.build_zero_shot_classifier(
        model,
        tokenizer=tokenizer,
        classnames=names,
        templates=TEMPLATE_SETS[templates][1],
        num_classes_per_batch=10,
        device=device,
        use_tqdm=len(names) > 50,
    )
    return weights.T.contiguous()


class OpenClipScorer(ImageNetScorer):
    """open_clip image embeddings scored against text prototypes."""

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)


def load_openclip_scorer(
    spec: str,
    *,
    templates: str = "openai",
    cache_dir: str | os.PathLike[str] | None = None,
    class_indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    weights_cache_dir: str | None = None,
) -> OpenClipScorer:
    """Build an :class:`OpenClipScorer`; text prototypes come from (or go to) the prototype cache."""
    if templates not in TEMPLATE_SETS:
        raise ValueError(f"unknown template set {templates!r}; choose one of {sorted(TEMPLATE_SETS)}")
    parsed = parse_openclip_spec(spec)
    model, weights_identity = create_openclip_model(parsed, weights_cache_dir=weights_cache_dir)
    model.to(device)
    model_id = f"{PREFIX}{parsed.arch}:{weights_identity}"
    prototype_set, template_fns = TEMPLATE_SETS[templates]
    indices = list(range(NUM_CLASSES)) if class_indices is None else list(class_indices)
    identity = {
        "model_id": model_id,
        "prototype_set": prototype_set,
        "templates": [fn("{}") for fn in template_fns],
        "classnames": [IMAGENET_CLASSNAMES[i] for i in indices],
        "class_indices": "all" if class_indices is None else indices,
        "open_clip": open_clip.__version__,
    }
    tokenizer = open_clip.get_tokenizer(parsed.arch)
    embed_dim = (open_clip.get_model_config(parsed.arch) or {}).get("embed_dim")
    prototypes, _ = prototype_cache.load_or_build(
        identity,
        lambda: build_text_prototypes(model, tokenizer, indices, templates, device=device),
        cache_dir=cache_dir,
        expected_shape=(len(indices), embed_dim) if embed_dim else None,
    )
    return OpenClipScorer(
        model=model,
        model_id=model_id,
        prototype_set=prototype_set,
        prototypes=prototypes.to(device),
        logit_scale=float(model.logit_scale.detach().exp()),
        class_indices=None if class_indices is None else indices,
        preprocess_spec=_preprocess_spec(model),
        normalize_embeddings=True,
    )
