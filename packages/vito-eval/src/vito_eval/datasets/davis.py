"""The DAVIS-2017 layout: ``JPEGImages/480p/<seq>/*.jpg``, indexed-palette ``Annotations/480p/<seq>/*.png``
and ``ImageSets/2017/<split>.txt``; reading it, and writing palette PNGs as its results layout expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from videonet_curate.storage import atomic_path
from vito_eval.errors import DatasetError

DAVIS_URL = "https://davischallenge.org/davis2017/code.html"


class DavisLayoutError(DatasetError):
    """The DAVIS root does not hold the official layout."""


@dataclass(frozen=True)
class DavisSequence:
    name: str
    frames: list[Path]
    annotations: list[Path]  # every annotation present; frame 0's is required


def list_sequences(root: Path, split: str = "val", resolution: str = "480p") -> list[DavisSequence]:
    """Sequences of ``ImageSets/2017/<split>.txt`` with their frames and annotations, checking the layout."""
    root = Path(root)
    split_file = root / "ImageSets" / "2017" / f"{split}.txt"
    expected = (
        f"expected the DAVIS-2017 layout under {root}: JPEGImages/{resolution}/<seq>/*.jpg, "
        f"Annotations/{resolution}/<seq>/*.png and ImageSets/2017/{split}.txt (download: {DAVIS_URL})"
    )
    if not split_file.is_file():
        raise DavisLayoutError(f"missing {split_file}; {expected}")
    names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not names:
        raise DavisLayoutError(f"{split_file} lists no sequences; {expected}")
    sequences = []
    for name in names:
        frames = sorted((root / "JPEGImages" / resolution / name).glob("*.jpg"))
        annotations = sorted((root / "Annotations" / resolution / name).glob("*.png"))
        if not frames:
            raise DavisLayoutError(
                f"sequence {name!r}: no frames in {root / 'JPEGImages' / resolution / name}; {expected}"
            )
        if not annotations or annotations[0].stem != frames[0].stem:
            raise DavisLayoutError(
                f"sequence {name!r}: no first-frame annotation {frames[0].stem}.png in "
                f"{root / 'Annotations' / resolution / name}; {expected}"
            )
        sequences.append(DavisSequence(name=name, frames=frames, annotations=annotations))
    return sequences


def read_index_png(path: Path) -> tuple[np.ndarray, list[int] | None]:
    """An indexed ('P' mode) PNG as (H, W) uint8 indices and its palette."""
    with Image.open(path) as im:
        if im.mode != "P":
            raise DavisLayoutError(f"{path} is a {im.mode} image; DAVIS annotations are indexed-palette PNGs")
        return np.array(im), im.getpalette()


def write_index_png(path: Path, labels: np.ndarray, palette: list[int] | None) -> None:
    """Write (H, W) indices as a palette PNG, atomically (temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    if palette is not None:
        im.putpalette(palette)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def load_frames(paths: list[Path]) -> np.ndarray:
    """Frames as uint8 (T, H, W, 3) RGB arrays."""
    try:
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    except (OSError, ValueError) as err:
        raise DavisLayoutError(f"cannot read the frames {paths[0].parent}: {err}") from err


def read_annotations(seq: DavisSequence, n_frames: int) -> np.ndarray:
    """Ground truth (T, H, W); frames without an annotation file are all background (as the official code)."""
    by_stem = {p.stem: p for p in seq.annotations}
    first = read_index_png(seq.annotations[0])[0]
    out = np.zeros((n_frames, *first.shape), dtype=np.uint8)
    for t, frame in enumerate(seq.frames[:n_frames]):
        if frame.stem in by_stem:
            out[t] = read_index_png(by_stem[frame.stem])[0]
    return out


def default_palette() -> list[int]:
    """The PASCAL/DAVIS colour map (bit-interleaved RGB) for 256 indices."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal
