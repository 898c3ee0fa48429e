"""Frames from a frame cache (``vito-train prepare``): two cached JPEGs per pair, no PyAV (cache mode).

A pair's times are drawn as in video mode, over the clip's cached span, and each picks its cached
frame by videonet_curate's one rule (``pick_frame`` on the cache's fps grid), so the temporal offset is
quantised to 1 / fps and video mode at the same fps reads the same frames.

On object storage a loader worker first sends the fetches of every frame of its batch together (``prefetch``,
called by ``FramePairDataset.__getitems__``), so a batch costs about one round trip, not one per frame,
and makes each sample as soon as its frames have arrived, while the batch's other GETs are in flight.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torchvision.io import decode_jpeg

from videonet_curate.video import pick_frame
from vito_train.data.cache import FrameCache
from vito_train.data.frame_pairs import FrameReadError
from vito_train.data.pairs import sample_pair_times


class CacheFrameSource:
    """Clip ``k`` of the cache (manifest order, as in video mode); picks are cached frame indices."""

    def __init__(self, cache: FrameCache, *, max_gap_s: float) -> None:
        self.cache, self.clips, self.max_gap_s = cache, cache.clips, max_gap_s
        self._prefetched: dict[tuple[int, int], bytes] = {}
        self._pending: Iterator[int] | None = None  # the batch's GETs still arriving

    def prefetch(self, wanted: list[tuple[int, tuple[int, int]]]) -> Iterator[int] | None:
        """Fetch the frames of ``(item, picks)`` together (object storage only: local reads are a pread
        each, nothing to gain); ``read_pair`` then takes them from memory. Returns the positions in
        ``wanted`` in the order their frames arrive (each once; None locally: any order), so the caller
        can decode and augment the first samples while the other GETs are still in flight. A failed
        fetch is left to ``read_pair``, which records the item as failed."""
        self._prefetched, self._pending = {}, None
        if not self.cache.remote:
            return None
        keys = sorted({(item, frame) for item, picks in wanted for frame in picks})
        try:
            arrivals = self.cache.fetch_jpegs([(self.clips[item], frame) for item, frame in keys])
        except OSError:
            return None
        self._pending = self._in_arrival_order(wanted, keys, arrivals)
        return self._pending

    def _in_arrival_order(
        self,
        wanted: list[tuple[int, tuple[int, int]]],
        keys: list[tuple[int, int]],
        arrivals: Iterator[tuple[list[int], list[bytes] | OSError]],
    ) -> Iterator[int]:
        store = self._prefetched  # this batch's: a later prefetch replaces it
        waiting_for = [len(set(picks)) for _item, picks in wanted]  # frames each position still lacks
        needed_by: dict[tuple[int, int], list[int]] = {}
        for position, (item, picks) in enumerate(wanted):
            for frame in set(picks):
                needed_by.setdefault((item, frame), []).append(position)
        given = [False] * len(wanted)
        for key_positions, blobs in arrivals:
            for at, key in enumerate(keys[k] for k in key_positions):
                if not isinstance(blobs, OSError):  # a failed GET: read_pair reads again and fails
                    store[key] = blobs[at]
                for position in needed_by[key]:
                    waiting_for[position] -= 1
                    if waiting_for[position] == 0 and not given[position]:
                        given[position] = True
                        yield position
        yield from (position for position, done in enumerate(given) if not done)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # a batch's frames in flight stay in the process that asked for them
        state["_prefetched"], state["_pending"] = {}, None
        return state

    def __len__(self) -> int:
        return len(self.clips)

    def item_id(self, item: int) -> str:
        return self.clips[item].clip_id

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[int, int]:
        clip = self.clips[item]
        t1, t2 = sample_pair_times(rng.random(), rng.random(), clip.start_s, clip.end_s, self.max_gap_s)
        return self.frame_index(item, t1), self.frame_index(item, t2)

    def frame_index(self, item: int, t: float) -> int:
        """The cached frame time ``t`` picks (``pick_frame`` on the cache's grid)."""
        clip = self.clips[item]
        pick = pick_frame(clip.start_s, clip.end_s, self.cache.plan.fps, t)
        return min(pick.index, len(clip.times) - 1)

    def _decode(self, item: int, frame: int) -> np.ndarray:
        # get, not pop: two samples of one batch may pick the same frame (kept until the next batch)
        data = self._prefetched.get((item, frame))
        if data is None and self._pending is not None:  # not yet arrived, or not asked for: let the
            for _position in self._pending:  # batch's GETs all land (the caller's order then ends)
                pass
            self._pending = None
            data = self._prefetched.get((item, frame))
        if data is None:
            data = self.cache.read_jpeg(self.clips[item], frame)
        # HWC view of the CHW tensor: no copy, the augmentation permutes it back
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).permute(1, 2, 0).numpy()

    def read_pair(self, item: int, picks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            first = self._decode(item, picks[0])
            return first, (first if picks[1] == picks[0] else self._decode(item, picks[1]))
        except (OSError, RuntimeError, ValueError) as exc:  # decode_jpeg raises RuntimeError on bad bytes
            raise FrameReadError(f"cached clip {self.item_id(item)}: {exc}") from exc
