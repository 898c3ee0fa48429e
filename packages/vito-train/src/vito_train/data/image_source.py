"""Frames from a still-image set (``vito-train run --images``): the paper's image-pretraining control.

Item ``k`` is image ``k`` of the set's training split (``data/image_sets.py``); both frames of a pair are
that image, so the two views differ only by their augmentations (there is no temporal offset).
An image that does not decode is a ``FrameReadError``: the pair dataset records it, counts it in the
run's ``failed_clips`` and moves to another image, as it does for an undecodable clip.
"""

from __future__ import annotations

import numpy as np

from vito_train.data.frame_pairs import FrameReadError
from vito_train.data.image_sets import ImageDecodeError, ImageSet


class ImageFrameSource:
    """The images of one split; a pair is one image picked twice (picks carry no information)."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def item_id(self, item: int) -> str:
        paths = self.images.paths
        return str(paths[item]) if paths is not None else f"{self.images.spec}#{item}"

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[int, int]:
        return 0, 0

    def read_pair(self, item: int, picks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            image = self.images.image(item)
        except ImageDecodeError as exc:
            raise FrameReadError(str(exc)) from exc
        frame = image.permute(1, 2, 0).numpy()  # HWC view, as the augmentation takes frames
        return frame, frame
