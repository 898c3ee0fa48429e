"""Phone clips carry their orientation as display-matrix side data: frames come out upright, exactly as
ffmpeg shows them (its CLI applies the matrix by default), not sideways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videonet_curate.video import read_frames_at


def _rotated_clip(src: Path, dest: Path, degrees: int) -> Path:
    """The first 10 frames of ``src`` at 160x120, tagged to be shown rotated by ``degrees`` (PyAV's
    writer stores the display matrix as phones do)."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        if degrees:
            stream.set_display_rotation(degrees)
        for index, frame in enumerate(inp.decode(video=0)):
            if index == 10:
                break
            for packet in stream.encode(frame.reformat(width=160, height=120, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


def _ffmpeg_first_frame(path: Path, tmp_path: Path) -> np.ndarray:
    png = tmp_path / f"{path.stem}.png"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-frames:v", "1", str(png)], check=True
    )
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_frames_are_upright_like_ffmpeg_shows_them(sample_videos: Path, tmp_path: Path, degrees: int) -> None:
    clip = _rotated_clip(sample_videos / "cup.mp4", tmp_path / f"rot{degrees}.mp4", degrees)
    with av.open(str(clip)) as container:
        assert next(container.decode(video=0)).rotation % 360 == degrees
    reference = _ffmpeg_first_frame(clip, tmp_path)
    (ours,) = read_frames_at(clip, [0.0], max_side=160)
    ours = np.asarray(ours, dtype=np.float32)
    assert ours.shape == reference.shape == ((160, 120, 3) if degrees in (90, 270) else (120, 160, 3))
    assert np.abs(ours - reference).mean() < 3.0  # same picture, same way up (scaler rounding only)
    if degrees:  # and the unrotated picture would not pass that check
        sideways = np.rot90(ours, k=-degrees // 90)
        assert sideways.shape != reference.shape or np.abs(sideways - reference).mean() > 20
