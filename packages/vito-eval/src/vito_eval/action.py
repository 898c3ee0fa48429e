"""UCF-101 action recognition with a frozen image encoder: clip features + a linear probe.

The official layout is read by :mod:`vito_eval.datasets.ucf101`. A clip's feature is the
encoder's pooled feature of its middle frame, or the mean over ``n_frames`` evenly spaced frames (the two
image-encoder protocols). Videos are decoded with PyAV. The probe is
`vito_eval.linear_probe.fit_linear_probe`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vito_eval.datasets.base import files_fingerprint
from vito_eval.datasets.ucf101 import Ucf101LayoutError, read_split
from vito_eval.feature_cache import FeatureCache, cache_key
from vito_eval.linear_probe import DEFAULT_L2_GRID, fit_linear_probe

log = logging.getLogger(__name__)

FrameMode = Literal["middle", "average"]


def frame_indices(n_total: int, mode: FrameMode, n_frames: int) -> list[int]:
    """The middle frame, or ``n_frames`` evenly spaced frames (segment centres) of ``n_total`` frames."""
    if n_total < 1:
        raise ValueError("a clip without frames")
    if mode == "middle":
        return [n_total // 2]
    n = min(n_frames, n_total)
    return sorted({int((i + 0.5) * n_total / n) for i in range(n)})


def decode_frames(path: Path, mode: FrameMode, n_frames: int) -> list[Image.Image]:
    """Decode the chosen frames of a video with videonet_curate's PyAV reader (the whole clip is decoded:
    UCF-101 clips are short and AVI frame counts in headers are not always right)."""
    from videonet_curate.video import decode_all_frames

    frames, _times = decode_all_frames(path)
    return [Image.fromarray(frames[i]) for i in frame_indices(len(frames), mode, n_frames)]


def clip_feature(
    embed: Callable[[torch.Tensor], torch.Tensor], path: Path, mode: FrameMode, n_frames: int, image_size: int
) -> np.ndarray:
    """The pooled feature of a clip: embed(frames) averaged over the chosen frames -> (D,)."""
    from vito_eval.datasets.base import to_model_input

    frames = decode_frames(path, mode, n_frames)
    batch = torch.stack([to_model_input(f, image_size) for f in frames])
    return embed(batch).float().mean(0).numpy()


@dataclass
class Ucf101Config:
    """Options of `vito-eval ucf101`."""

    encoder: str
    root: Path
    splits: Path
    split: int = 1
    out: Path | None = None
    frames: FrameMode = "middle"
    n_frames: int = 8
    image_size: int = 224
    device: str = "cpu"
    seed: int = 0
    l2_grid: tuple[float, ...] | None = None
    progress: bool = False
    limit_per_class: int | None = None  # for quick looks: the first N listed clips of each class
    cache_dir: Path | None = None  # feature cache folder (the CLI passes vito-eval's default); None: off
    extra: dict[str, Any] = field(default_factory=dict)


def _limit(entries: list[tuple[str, int]], per_class: int | None) -> list[tuple[str, int]]:
    if per_class is None:
        return entries
    seen: dict[int, int] = {}
    out = []
    for rel, label in entries:
        if seen.get(label, 0) < per_class:
            out.append((rel, label))
            seen[label] = seen.get(label, 0) + 1
    return out


def extract_split(
    embed: Callable[[torch.Tensor], torch.Tensor],
    videos_root: Path,
    entries: list[tuple[str, int]],
    config: Ucf101Config,
    track: Callable[[Iterable, str], Iterable] | None = None,
    desc: str = "clips",
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Features (N, D) and labels of the clips that decode; failures map path -> reason."""
    feats, labels, failed = [], [], {}
    for rel, label in track(entries, desc) if track else entries:
        try:
            feats.append(
                clip_feature(embed, videos_root / rel, config.frames, config.n_frames, config.image_size)
            )
            labels.append(label)
        except (OSError, ValueError) as err:  # one broken video (VideoError) must not stop the run
            failed[rel] = f"{type(err).__name__}: {err}"
            log.warning("skipping %s: %s", rel, err)
    if not feats:
        raise Ucf101LayoutError(
            f"no clip of {desc} could be decoded under {videos_root}: {list(failed.items())[:3]}"
        )
    return np.stack(feats), np.array(labels, dtype=np.int64), failed


def cached_split_features(
    encoder: Any,
    videos_root: Path,
    entries: list[tuple[str, int]],
    config: Ucf101Config,
    track: Callable[[Iterable, str], Iterable] | None = None,
    desc: str = "clips",
) -> tuple[np.ndarray, np.ndarray, dict[str, str], bool]:
    """`extract_split` through the feature cache (``config.cache_dir``; None disables it).

    The key covers the encoder (weights, readout, normalisation), the clip list, the frame choice, the image
    size and the videos' sizes and mtimes (`vito_eval.feature_cache`).
    """
    if config.cache_dir is None:
        return (*extract_split(encoder.embed, videos_root, entries, config, track, desc), False)
    cache = FeatureCache(config.cache_dir)
    present = [videos_root / rel for rel, _ in entries if (videos_root / rel).is_file()]
    key = cache_key(
        {
            "task": "ucf101-clip-features",
            "encoder": encoder.cache_key,
            "entries": entries,
            "frames": config.frames,
            "n_frames": config.n_frames if config.frames == "average" else 1,
            "image_size": config.image_size,
            "videos": files_fingerprint(present),
        }
    )
    hit = cache.load(key)
    if hit is not None:
        return hit.features, hit.labels, hit.meta.get("failed", {}), True
    start = time.perf_counter()
    feats, labels, failed = extract_split(encoder.embed, videos_root, entries, config, track, desc)
    cache.store(key, feats, labels, {"failed": failed, "seconds": time.perf_counter() - start})
    return feats, labels, failed, False


def run_ucf101(
    config: Ucf101Config, track: Callable[[Iterable, str], Iterable] | None = None
) -> dict[str, Any]:
    """Extract train/test clip features, fit the linear probe, report top-1/top-5; writes ``config.out``."""
    from videonet_curate.storage import atomic_write_json
    from vito_eval.encoders import load_encoder
    from vito_eval.report import classification_summary, plot_confusion

    if config.frames not in ("middle", "average"):
        raise Ucf101LayoutError(f"--frames must be 'middle' or 'average', got {config.frames!r}")
    split = read_split(config.root, config.splits, config.split)
    encoder = load_encoder(config.encoder, device=config.device)
    start = time.perf_counter()
    data = {}
    from_cache: dict[str, bool] = {}
    failed: dict[str, str] = {}
    for name, entries in (("train", split.train), ("test", split.test)):
        x, y, bad, hit = cached_split_features(
            encoder,
            config.root,
            _limit(entries, config.limit_per_class),
            config,
            track,
            desc=f"UCF-101 split {config.split} {name}",
        )
        data[name] = (x, y)
        from_cache[name] = hit
        failed.update(bad)
    extract_s = time.perf_counter() - start
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    start = time.perf_counter()
    probe = fit_linear_probe(
        xtr, ytr, len(split.classes), config.l2_grid or DEFAULT_L2_GRID, seed=config.seed
    )
    summary = classification_summary(probe.logits(xte), yte, split.classes)
    result: dict[str, Any] = {
        "task": "ucf101",
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_hash,
        "split": config.split,
        "clip_feature": "middle frame" if config.frames == "middle" else f"mean of {config.n_frames} frames",
        "image_size": config.image_size,
        "num_classes": len(split.classes),
        "train_clips": int(len(ytr)),
        "test_clips": int(len(yte)),
        "top1": summary["top1"],
        "top5": summary.get("top5"),
        "l2": probe.l2,
        "linear": summary,
        "failed": failed,
        "timing": {
            "extract_s": round(extract_s, 2),
            "probe_s": round(time.perf_counter() - start, 2),
            "from_cache": from_cache,
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    if config.out is not None:
        out = Path(config.out)
        json_path = out if out.suffix == ".json" else out / f"ucf101-split{config.split}.json"
        png = json_path.with_suffix(".confusion.png")
        plot_confusion(
            np.asarray(summary["confusion"]),
            split.classes,
            f"{encoder.name}: UCF-101 split {config.split} (top-1 {summary['top1']:.3f})",
            png,
        )
        result["confusion_png"] = png.name
        atomic_write_json(json_path, result)
        result["json"] = str(json_path)
    return result
