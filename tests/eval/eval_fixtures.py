"""Tiny datasets in the official DAVIS-2017, UCF-101, PASCAL VOC 2012 and ADE20K layouts, from real video.

Textures come from the sample clips (``videonet-curate samples fetch``); geometry is synthetic and known, so
tests can check answers exactly: objects are axis-aligned rectangles on an 8-pixel (DAVIS) or 16-pixel
(segmentation) grid, so a stride-8/16 feature cell never straddles two labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from videonet_curate.video import VideoDecodeError, decode_all_frames, probe_video
from vito_eval.datasets.davis import default_palette, write_index_png


def read_video_frames(video: Path, start_s: float, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``n`` consecutive RGB frames (H, W, 3) from ``start_s`` (seconds from the first frame), resized to
    ``size`` = (W, H), read with videonet-curate's PyAV reader (the project's one frame reader)."""
    info = probe_video(video)
    span = (n + 1) / info.fps
    while True:  # headers may overstate the rate (tree.avi says 15 fps, its frames are ~0.4 s apart)
        try:
            frames = decode_all_frames(video, start_s, start_s + span)[0]
        except VideoDecodeError:
            frames = np.zeros((0, 1, 1, 3), np.uint8)
        if len(frames) >= n or start_s + span > info.duration_s:
            break
        span *= 4
    if len(frames) < n:
        raise ValueError(f"{video}: only {len(frames)} of {n} frames from {start_s}s")
    return [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames[:n]]


def texture(samples_dir: Path, name: str, start_s: float, size: tuple[int, int]) -> np.ndarray:
    """One real frame of a sample video, resized to ``size`` = (W, H)."""
    return read_video_frames(Path(samples_dir) / "videos" / name, start_s, 1, size)[0]


# --------------------------------------------------------------------------------------------------- DAVIS
@dataclass(frozen=True)
class DavisFixture:
    root: Path
    sequences: list[str]
    labels: dict[str, np.ndarray]  # (T, H, W) ground truth per sequence
    frames: dict[str, np.ndarray]  # (T, H, W, 3) uint8, as written (before JPEG)


def _davis_sequence(
    background: np.ndarray,
    patches: list[np.ndarray],
    starts: list[tuple[int, int]],
    moves: list[tuple[int, int]],
    n_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = background.shape[:2]
    frames = np.repeat(background[None], n_frames, axis=0).copy()
    labels = np.zeros((n_frames, h, w), dtype=np.uint8)
    for t in range(n_frames):
        for obj, (patch, (y0, x0), (dy, dx)) in enumerate(zip(patches, starts, moves, strict=True), start=1):
            y, x = y0 + dy * t, x0 + dx * t
            ph, pw = patch.shape[:2]
            if not (0 <= y and y + ph <= h and 0 <= x and x + pw <= w):
                raise ValueError(f"object {obj} leaves the frame at t={t}")
            frames[t, y : y + ph, x : x + pw] = patch
            labels[t, y : y + ph, x : x + pw] = obj
    return frames, labels


def write_davis_fixture(
    root: Path, samples_dir: Path, n_frames: int = 6, size: tuple[int, int] = (96, 64)
) -> DavisFixture:
    """Two DAVIS-2017 sequences (2 objects and 1 object) of real textures translating 8 px per frame.

    Layout: ``JPEGImages/480p/<seq>/00000.jpg``, palette ``Annotations/480p/<seq>/00000.png`` for every frame,
    ``ImageSets/2017/val.txt``.
    """
    root = Path(root)
    w, h = size
    specs = {
        "cockatoo-bikes": dict(
            background=texture(samples_dir, "cockatoo.mp4", 2.0, (w, h)),
            patches=[
                texture(samples_dir, "bikes.mp4", 3.0, (24, 16)),
                texture(samples_dir, "cup.mp4", 1.0, (16, 16)),
            ],
            starts=[(8, 8), (40, w - 24)],
            moves=[(0, 8), (0, -8)],
        ),
        "city-box": dict(
            background=texture(samples_dir, "cityCC0.mpg", 1.0, (w, h)),
            patches=[texture(samples_dir, "box.mp4", 2.0, (16, 24))],
            starts=[(8, 8)],
            moves=[(0, 8)],
        ),
    }
    labels, frames = {}, {}
    palette = default_palette()
    for name, spec in specs.items():
        seq_frames, seq_labels = _davis_sequence(
            spec["background"], spec["patches"], spec["starts"], spec["moves"], n_frames
        )
        img_dir = root / "JPEGImages" / "480p" / name
        img_dir.mkdir(parents=True, exist_ok=True)
        for t in range(n_frames):
            Image.fromarray(seq_frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
            write_index_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", seq_labels[t], palette)
        labels[name], frames[name] = seq_labels, seq_frames
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(specs) + "\n")
    return DavisFixture(root=root, sequences=list(specs), labels=labels, frames=frames)


# ------------------------------------------------------------------------------------------------- UCF-101
UCF_FIXTURE_CLASSES: dict[str, tuple[str, float]] = {
    # class name (UCF-101 CamelCase style) -> (sample video, first second to cut from)
    "Biking": ("bikes.mp4", 0.0),
    "Cockatoo": ("cockatoo.mp4", 0.0),
    "CupHandling": ("cup.mp4", 0.0),
    "CityTraffic": ("cityCC0.mpg", 0.0),
    "Pedestrians": ("vtest.avi", 0.0),
    "BoxHandling": ("box.mp4", 0.0),
}


@dataclass(frozen=True)
class Ucf101Fixture:
    videos_root: Path  # UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    splits_dir: Path  # ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt}
    classes: list[str]
    n_train: int
    n_test: int


def write_clip_avi(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Encode RGB frames as an MPEG-4 Part 2 AVI with PyAV (UCF-101 ships xvid AVIs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def write_ucf101_fixture(
    root: Path,
    samples_dir: Path,
    n_groups: int = 4,
    frames_per_clip: int = 6,
    size: tuple[int, int] = (64, 48),
    test_groups: int = 1,
) -> Ucf101Fixture:
    """Short clips per class cut from the sample videos, in the UCF-101 layout with split 1.

    Group g of a class is a clip starting g*0.8 s into its video; groups 1..test_groups are test (as the
    official split 1 tests groups 1-7), the rest train.
    """
    root = Path(root)
    videos_root, splits_dir = root / "UCF-101", root / "ucfTrainTestlist"
    splits_dir.mkdir(parents=True, exist_ok=True)
    train, test = [], []
    classes = list(UCF_FIXTURE_CLASSES)
    for idx, cls in enumerate(classes, start=1):
        video, start = UCF_FIXTURE_CLASSES[cls]
        for g in range(1, n_groups + 1):
            frames = read_video_frames(
                Path(samples_dir) / "videos" / video, start + 0.8 * (g - 1), frames_per_clip, size
            )
            rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
            write_clip_avi(videos_root / rel, frames)
            (test if g <= test_groups else train).append((rel, idx))
    (splits_dir / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, start=1)))
    (splits_dir / "trainlist01.txt").write_text("".join(f"{rel} {i}\n" for rel, i in train))
    (splits_dir / "testlist01.txt").write_text("".join(f"{rel}\n" for rel, _ in test))
    return Ucf101Fixture(videos_root, splits_dir, classes, len(train), len(test))


# ------------------------------------------------------------------------------------------- segmentation
# (class index in the dataset's label files, sample video, second) for the textures pasted in
VOC_FIXTURE_TEXTURES = {
    2: ("bikes.mp4", 3.0),
    3: ("cockatoo.mp4", 5.0),
    15: ("vtest.avi", 10.0),
}  # bicycle bird person
ADE_FIXTURE_TEXTURES = {
    5: ("tree.avi", 4.0),
    13: ("vtest.avi", 20.0),
    21: ("cityCC0.mpg", 3.0),
}  # tree person car


@dataclass(frozen=True)
class SegmentationFixture:
    root: Path
    train_ids: list[str]
    val_ids: list[str]
    labels: dict[str, np.ndarray]  # the label file's values (dataset coding, before any remapping)
    regions: dict[str, np.ndarray]  # the pasted regions' classes without void borders (dataset coding)


def _compose(
    rng: np.random.Generator,
    background: np.ndarray,
    textures: dict[int, np.ndarray],
    bg_label: int,
    cell: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste 2-3 grid-aligned rectangles of class textures onto a background; returns (image, labels)."""
    h, w = background.shape[:2]
    image, labels = background.copy(), np.full((h, w), bg_label, dtype=np.uint8)
    for cls in rng.choice(list(textures), size=rng.integers(2, len(textures) + 1), replace=False):
        ch, cw = rng.integers(2, 4, size=2) * cell
        y, x = rng.integers(0, (h - ch) // cell + 1) * cell, rng.integers(0, (w - cw) // cell + 1) * cell
        tex = textures[int(cls)]
        image[y : y + ch, x : x + cw] = tex[y : y + ch, x : x + cw]
        labels[y : y + ch, x : x + cw] = cls
    return image, labels


def _void_border(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """VOC marks object outlines as 255 ('void'): here ``width`` pixels on each side of every edge."""
    edge = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    for _ in range(width - 1):
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        edge = grown
    return np.where(edge, 255, labels).astype(np.uint8)


def write_voc_fixture(
    root: Path, samples_dir: Path, n_train: int = 8, n_val: int = 4, size: int = 96, seed: int = 0
) -> SegmentationFixture:
    """PASCAL VOC 2012 layout: ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``.

    ``root`` is the VOC2012 folder; labels are palette PNGs with background 0, classes 1..20 and 255 borders.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    background = texture(samples_dir, "tree.avi", 10.0, (size, size))
    textures = {c: texture(samples_dir, v, s, (size, size)) for c, (v, s) in VOC_FIXTURE_TEXTURES.items()}
    ids = [f"2012_{i:06d}" for i in range(n_train + n_val)]
    labels, regions = {}, {}
    for image_id in ids:
        image, regions[image_id] = _compose(rng, background, textures, bg_label=0, cell=16)
        lab = _void_border(regions[image_id])
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        write_index_png(root / "SegmentationClass" / f"{image_id}.png", lab, default_palette())
        labels[image_id] = lab
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    return SegmentationFixture(root, ids[:n_train], ids[n_train:], labels, regions)


def write_ade20k_fixture(
    root: Path, samples_dir: Path, n_train: int = 8, n_val: int = 4, size: int = 96, seed: int = 1
) -> SegmentationFixture:
    """ADE20K (SceneParsing) layout: ``ADEChallengeData2016/{images,annotations}/{training,validation}``.

    ``root`` is ADEChallengeData2016; annotations are 8-bit grey PNGs, 0 = other, classes 1..150. The
    background here is a wall-like texture labelled 0 ('other'), so it is ignored by the metric.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    background = texture(samples_dir, "box.mp4", 5.0, (size, size))
    textures = {c: texture(samples_dir, v, s, (size, size)) for c, (v, s) in ADE_FIXTURE_TEXTURES.items()}
    train_ids = [f"ADE_train_{i:08d}" for i in range(1, n_train + 1)]
    val_ids = [f"ADE_val_{i:08d}" for i in range(1, n_val + 1)]
    labels = {}
    for split, ids in (("training", train_ids), ("validation", val_ids)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            image, lab = _compose(rng, background, textures, bg_label=0, cell=16)
            Image.fromarray(image).save(root / "images" / split / f"{image_id}.jpg", quality=95)
            Image.fromarray(lab, mode="L").save(root / "annotations" / split / f"{image_id}.png")
            labels[image_id] = lab
    return SegmentationFixture(root, train_ids, val_ids, labels, dict(labels))
