"""Still-image sets the trainer reads: ``imagefolder:DIR``, ``mnist:DIR``, ``fashion-mnist:DIR``.

- ``imagefolder:DIR``: torchvision's ImageFolder layout, ``DIR/<class>/*.jpg`` (the ImageNet train
  convention); when ``DIR/train/`` exists (the layout ``vito-eval probe`` reads) the training split is
  ``DIR/train`` and the test split ``DIR/val`` (or ``DIR/test``). torchvision's ``find_classes`` and
  ``make_dataset`` do the scan.
- ``mnist:DIR``, ``fashion-mnist:DIR``: the standard IDX files,
  ``DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (as Debian's dataset-fashion-mnist installs
  them and LeCun's site serves MNIST): 60,000 train and 10,000 test 28x28 images, held in memory.

Labels are kept (the kNN monitor and vito-eval use them); pretraining never reads them. vito-eval's
probe datasets reuse ``read_idx`` and the class names from here (dependencies point eval -> train).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

IMAGE_SET_KINDS = ("imagefolder", "mnist", "fashion-mnist")
SPLITS = ("train", "test")

MNIST_CLASSES = tuple(str(d) for d in range(10))
# The order of torchvision.datasets.FashionMNIST.classes (label index -> name).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_IDX_SPLIT = {"train": "train", "test": "t10k"}

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class ImageSetError(ValueError):
    """An image-set spec that is unknown, missing, empty or malformed (the message names the fix)."""


class ImageDecodeError(ImageSetError):
    """One image file that does not decode."""


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: 2 zero bytes, a dtype code, the number of dimensions, big-endian int32
    sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ImageSetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ImageSetError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ImageSetError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ImageSetError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - offset} follow"
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(root: Path, stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz``."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise ImageSetError(
        f"{root}: missing {stem}[.gz]; expected the standard IDX files "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in this directory"
    )


def idx_files(root: Path, idx_split: str) -> tuple[Path, Path]:
    """The (images, labels) files of ``idx_split`` (``train`` or ``t10k``) under ``root``."""
    return (
        find_idx_file(root, f"{idx_split}-images-idx3-ubyte"),
        find_idx_file(root, f"{idx_split}-labels-idx1-ubyte"),
    )


def read_idx_split(spec: str, root: Path, idx_split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) and int64 labels (N,) of one split of an MNIST-format directory."""
    images_file, labels_file = idx_files(root, idx_split)
    images = read_idx(images_file)
    labels = read_idx(labels_file).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ImageSetError(
            f"{spec}: {idx_split} has images of shape {images.shape} and {len(labels)} labels"
        )
    return images.astype(np.uint8), labels


@dataclass(frozen=True)
class ImageSet:
    """One split of an image set: images in memory (uint8 N x H x W [x C]) or as files, with labels."""

    spec: str
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    pixels: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 RGB (3, H, W); grayscale is repeated over the channels.
        ImageDecodeError names the file when it does not decode."""
        if self.pixels is not None:
            x = torch.from_numpy(np.ascontiguousarray(self.pixels[index]))
            return x.expand(3, *x.shape) if x.ndim == 2 else x.permute(2, 0, 1)
        assert self.paths is not None
        return decode_image_file(self.paths[index])

    def describe(self) -> str:
        return f"{self.spec} ({self.split}: {len(self)} images, {len(self.class_names)} classes)"


def decode_image_file(path: Path) -> torch.Tensor:
    """A JPEG/PNG/GIF/WebP file as uint8 RGB (3, H, W), decoded by torchvision."""
    try:
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        return decode_image(data, mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode image {path}: {exc}; remove or replace the file") from exc


def parse_image_set_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ImageSetError(f"image set {spec!r} is not KIND:DIR (kinds: {', '.join(IMAGE_SET_KINDS)})")
    if kind not in IMAGE_SET_KINDS:
        raise ImageSetError(
            f"unknown image-set kind {kind!r} in {spec!r}; known kinds: {', '.join(IMAGE_SET_KINDS)}"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ImageSetError(f"{spec}: {root} is not a directory")
    return kind, root


def _image_folder(spec: str, root: Path, split: str) -> ImageSet:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if (root / "train").is_dir():  # the probe's layout: train/ and val/ (or test/)
        if split == "train":
            folder = root / "train"
        else:
            folder = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
            if folder is None:
                raise ImageSetError(f"{spec}: no {root}/val/ or {root}/test/ for the test split")
        class_root = root / "train"
    elif split == "train":
        folder = class_root = root
    else:
        raise ImageSetError(f"{spec}: a test split needs {root}/train/ and {root}/val/ (or test/)")
    try:
        class_names, class_to_idx = find_classes(str(class_root))
    except FileNotFoundError as exc:
        raise ImageSetError(
            f"{spec}: {class_root} has no class sub-directories; expected {class_root}/<class>/*.jpg"
        ) from exc
    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as exc:
        raise ImageSetError(f"{spec}: {folder}: {exc}") from exc
    if not samples:
        raise ImageSetError(
            f"{spec}: no images ({', '.join(IMG_EXTENSIONS[:4])}, ...) under {folder}/<class>/; "
            "point --images at a folder of class sub-folders holding images"
        )
    return ImageSet(
        spec,
        split,
        labels=np.array([c for _, c in samples], dtype=np.int64),
        class_names=tuple(class_names),
        paths=tuple(Path(p) for p, _ in samples),
    )


def load_image_set(spec: str, split: str = "train") -> ImageSet:
    """One split (``train`` or ``test``) of an image set named by its spec (``KIND:DIR``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind, root = parse_image_set_spec(spec)
    if kind == "imagefolder":
        return _image_folder(spec, root, split)
    images, labels = read_idx_split(spec, root, _IDX_SPLIT[split])
    if len(images) == 0:
        raise ImageSetError(f"{spec}: the {split} split holds no images")
    return ImageSet(spec, split, labels=labels, class_names=IDX_CLASSES[kind], pixels=images)
