"""video/timing.py: the frame grid and the one frame-picking rule, and output sizes, without any video."""

from __future__ import annotations

import pytest

from videonet_curate.video import frame_grid, frame_grid_length, pick_frame
from videonet_curate.video.reader import output_size


def test_frame_grid_covers_the_clip_at_fps() -> None:
    assert frame_grid(2.0, 3.0, 4.0) == [2.0, 2.25, 2.5, 2.75, 3.0]
    assert frame_grid_length(2.0, 3.0, 4.0) == 5
    assert frame_grid(0.0, 0.2, 4.0) == [0.0]  # a clip shorter than one frame still has its first frame
    assert len(frame_grid(0.0, 10.0, 8.0)) == 81  # float noise in 10 * 8 does not drop the last time
    with pytest.raises(ValueError, match="fps"):
        frame_grid_length(0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("t", "index"),
    [
        (2.0, 0),
        (2.1, 0),  # nearer 2.0 than 2.25
        (2.125, 0),  # exactly between: the earlier frame
        (2.13, 1),
        (2.26, 1),
        (2.99, 4),
        (5.0, 4),  # past the clip: its last frame
        (1.0, 0),  # before the clip: its first frame
    ],
)
def test_pick_frame_takes_the_nearest_grid_time(t: float, index: int) -> None:
    pick = pick_frame(2.0, 3.0, 4.0, t)
    assert pick.index == index
    assert pick.time_s == pytest.approx(2.0 + index / 4.0)


def test_pick_frame_agrees_with_a_nearest_search_over_the_grid() -> None:
    """The rule is what a cache of the grid serves by nearest time (ties to the earlier frame)."""
    start, end, fps = 1.3, 7.9, 7.5
    grid = frame_grid(start, end, fps)
    for k in range(2000):
        t = start - 0.5 + k * (end - start + 1.0) / 1999
        nearest = min(range(len(grid)), key=lambda i: (abs(grid[i] - t), i))
        pick = pick_frame(start, end, fps, t)
        assert pick.index == nearest, t
        assert pick.time_s == pytest.approx(grid[nearest])


@pytest.mark.parametrize(
    ("size", "bounds", "expected"),
    [
        ((1920, 1080), {"max_side": 456}, (456, 256)),
        ((1920, 1080), {"short_side": 256}, (455, 256)),
        ((1080, 1920), {"short_side": 256}, (256, 455)),
        ((320, 240), {"short_side": 256}, (320, 240)),  # never upscales
        ((320, 240), {"max_side": 0}, (320, 240)),
        ((320, 240), {}, (320, 240)),
    ],
)
def test_output_size_bounds_one_side(size: tuple[int, int], bounds: dict, expected: tuple[int, int]) -> None:
    assert output_size(*size, **bounds) == expected


def test_output_size_takes_one_bound() -> None:
    with pytest.raises(ValueError, match="not both"):
        output_size(640, 480, max_side=256, short_side=128)
