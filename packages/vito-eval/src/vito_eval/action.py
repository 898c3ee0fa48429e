"""UCF-101 action recognition with a frozen image encoder: clip features + a linear probe.

Official layout: videos ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and split files
``ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}`` (N = 1, 2, 3). A clip's feature is the
encoder's pooled feature of its middle frame, or the mean over ``n_frames`` evenly spaced frames (the two
image-encoder protocols). Videos are decoded with PyAV. The probe is `vito_eval.probe.fit_linear_probe`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vito_eval.errors import DatasetError

log = logging.getLogger(__name__)

UCF101_URL = "https://www.crcv.ucf.edu/data/UCF101.php"
FrameMode = Literal["middle", "average"]


class Ucf101LayoutError(DatasetError):
    """The UCF-101 videos or split files are not in the official layout."""


@dataclass(frozen=True)
class Ucf101Split:
    classes: list[str]
    train: list[tuple[str, int]]  # (path relative to the videos root, 0-based class index)
    test: list[tuple[str, int]]


def read_split(videos_root: Path, splits_dir: Path, split: int) -> Ucf101Split:
    """Parse classInd.txt, trainlist0N.txt and testlist0N.txt (1-based class ids become 0-based)."""
    videos_root, splits_dir = Path(videos_root), Path(splits_dir)
    expected = (
        f"expected the official UCF-101 split files in {splits_dir} (classInd.txt, trainlist0{split}.txt, "
        f"testlist0{split}.txt from UCF101TrainTestSplits-RecognitionTask.zip) and the videos as "
        f"{videos_root}/<Class>/v_<Class>_gXX_cYY.avi ({UCF101_URL})"
    )
    if split not in (1, 2, 3):
        raise Ucf101LayoutError(f"--split must be 1, 2 or 3, got {split}")
    files = {
        name: splits_dir / name
        for name in ("classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt")
    }
    for path in files.values():
        if not path.is_file():
            raise Ucf101LayoutError(f"missing {path}; {expected}")
    if not videos_root.is_dir():
        raise Ucf101LayoutError(f"videos root {videos_root} is not a directory; {expected}")
    classes: dict[int, str] = {}
    for line in files["classInd.txt"].read_text().splitlines():
        if line.strip():
            idx, name = line.split()
            classes[int(idx)] = name
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise Ucf101LayoutError(f"{files['classInd.txt']}: class ids must run 1..N; {expected}")
    names = [classes[i] for i in range(1, len(classes) + 1)]
    by_name = {n: i for i, n in enumerate(names)}

    def entries(path: Path) -> list[tuple[str, int]]:
        out = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]  # trainlists append the 1-based class id; testlists do not
            cls = rel.split("/")[0]
            if cls not in by_name:
                raise Ucf101LayoutError(f"{path}: {rel!r} names class {cls!r}, not in classInd.txt")
            out.append((rel, by_name[cls]))
        if not out:
            raise Ucf101LayoutError(f"{path} lists no videos; {expected}")
        return out

    split_ = Ucf101Split(
        names, entries(files[f"trainlist0{split}.txt"]), entries(files[f"testlist0{split}.txt"])
    )
    missing = [rel for rel, _ in split_.train + split_.test if not (videos_root / rel).is_file()]
    if len(missing) == len(split_.train) + len(split_.test):
        raise Ucf101LayoutError(
            f"none of the listed videos exist under {videos_root} (e.g. {missing[0]}); {expected}"
        )
    if missing:
        log.warning(
            "%d listed videos are missing under %s (e.g. %s); they are recorded as failed",
            len(missing),
            videos_root,
            missing[0],
        )
    return split_


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
    size and the videos' sizes and mtimes; entries are written to a temporary name and renamed.
    """
    if config.cache_dir is None:
        return (*extract_split(encoder.embed, videos_root, entries, config, track, desc), False)
    from vito_eval.datasets.base import files_fingerprint

    present = [videos_root / rel for rel, _ in entries if (videos_root / rel).is_file()]
    spec = {
        "task": "ucf101-clip-features",
        "encoder": encoder.cache_key,
        "entries": entries,
        "frames": config.frames,
        "n_frames": config.n_frames if config.frames == "average" else 1,
        "image_size": config.image_size,
        "videos": files_fingerprint(present),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    path = Path(config.cache_dir) / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return data["features"], data["labels"], json.loads(str(data["failed"])), True
        except (OSError, ValueError, KeyError) as err:  # a damaged entry is recomputed
            log.warning("ignoring unreadable cache entry %s: %s", path, err)
    feats, labels, failed = extract_split(encoder.embed, videos_root, entries, config, track, desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, features=feats, labels=labels, failed=json.dumps(failed))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return feats, labels, failed, False


def run_ucf101(
    config: Ucf101Config, track: Callable[[Iterable, str], Iterable] | None = None
) -> dict[str, Any]:
    """Extract train/test clip features, fit the linear probe, report top-1/top-5; writes ``config.out``."""
    from vito_eval.encoders import load_encoder
    from vito_eval.probe import DEFAULT_L2_GRID, fit_linear_probe
    from vito_eval.report import classification_summary, plot_confusion, write_json_atomic

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
        write_json_atomic(json_path, result)
        result["json"] = str(json_path)
    return result
