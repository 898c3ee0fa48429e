"""Frames from the videos of a curated manifest, read by seeking with PyAV (video mode).

A pair's two times are drawn within the clip and each picks its frame by videonet_curate's one rule
(``pick_frame``: the nearest time on the clip's ``fps`` grid, then the first frame at or after it), so
video mode and a frame cache prepared at the same fps train on the same frames.
"""

from __future__ import annotations

import numpy as np

from videonet_curate.video import VideoError, pick_frame
from vito_train.data.decode import read_frames_at
from vito_train.data.frame_pairs import FrameReadError
from vito_train.data.pairs import Clip, sample_pair_times


class VideoFrameSource:
    """Clip ``k`` of the manifest; a pair is two times at most ``max_gap_s`` apart within the clip."""

    def __init__(self, clips: list[Clip], *, max_gap_s: float, decode_short_side: int, fps: float) -> None:
        self.clips, self.max_gap_s, self.fps = clips, max_gap_s, fps
        self.decode_short_side = decode_short_side

    def __len__(self) -> int:
        return len(self.clips)

    def item_id(self, item: int) -> str:
        return self.clips[item].clip_id

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[float, float]:
        clip = self.clips[item]
        t1, t2 = sample_pair_times(rng.random(), rng.random(), clip.start_s, clip.end_s, self.max_gap_s)
        return self.frame_time(item, t1), self.frame_time(item, t2)

    def frame_time(self, item: int, t: float) -> float:
        """The grid time whose frame time ``t`` picks (``pick_frame``)."""
        clip = self.clips[item]
        return pick_frame(clip.start_s, clip.end_s, self.fps, t).time_s

    def read_pair(self, item: int, picks: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        try:
            frame_1, frame_2 = read_frames_at(self.clips[item].path, picks, short_side=self.decode_short_side)
        except VideoError as exc:
            raise FrameReadError(str(exc)) from exc
        return frame_1, frame_2
