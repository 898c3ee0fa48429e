"""Frames from the videos of a curated manifest, read by seeking with PyAV (video mode)."""

from __future__ import annotations

import numpy as np

from videonet_curate.video import VideoError
from vito_train.data.decode import read_frames_at
from vito_train.data.frame_pairs import FrameReadError
from vito_train.data.pairs import Clip, sample_pair_times


class VideoFrameSource:
    """Clip ``k`` of the manifest; a pair is two times at most ``max_gap_s`` apart within the clip."""

    def __init__(self, clips: list[Clip], *, max_gap_s: float, decode_short_side: int) -> None:
        self.clips, self.max_gap_s, self.decode_short_side = clips, max_gap_s, decode_short_side

    def __len__(self) -> int:
        return len(self.clips)

    def item_id(self, item: int) -> str:
        return self.clips[item].clip_id

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[float, float]:
        clip = self.clips[item]
        return sample_pair_times(rng.random(), rng.random(), clip.start_s, clip.end_s, self.max_gap_s)

    def read_pair(self, item: int, picks: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        try:
            frame_1, frame_2 = read_frames_at(self.clips[item].path, picks, short_side=self.decode_short_side)
        except VideoError as exc:
            raise FrameReadError(str(exc)) from exc
        return frame_1, frame_2
