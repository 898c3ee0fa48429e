"""The video subpackage on the real sample clips: probing, windows, and seek sampling against a full decode."""

from __future__ import annotations

import math
import pickle
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from videonet_curate.video import (
    NotAVideoError,
    VideoDecodeError,
    clip_windows,
    decode_all_frames,
    probe_video,
    read_frames_at,
    sample_timestamps,
)

# name: (duration_s, width, height, codec)
SAMPLES = {
    "bikes.mp4": (10.0, 640, 272, "h264"),
    "box.mp4": (15.18, 640, 480, "h264"),
    "carphone_pristine.mp4": (4.0, 176, 144, "h264"),
    "cityCC0.mpg": (7.6, 720, 405, "mpeg2video"),
    "cockatoo.mp4": (14.0, 1280, 720, "h264"),
    "cup.mp4": (8.1, 640, 480, "h264"),
    "dog.mp4": (1.52, 1920, 1080, "h264"),
    "realshort.mp4": (1.2, 320, 240, "h264"),
    "tree.avi": (29.6, 320, 240, "cinepak"),
    "vtest.avi": (79.5, 768, 576, "msmpeg4"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_probe_reads_every_sample(sample_videos: Path, name: str) -> None:
    duration, width, height, codec = SAMPLES[name]
    info = probe_video(sample_videos / name)
    assert info.duration_s == pytest.approx(duration, abs=0.05)
    assert (info.width, info.height, info.codec) == (width, height, codec)
    assert 5 < info.fps < 61
    assert info.num_frames == pytest.approx(info.duration_s * info.fps, rel=0.05)


def test_probe_reports_audio_and_stream_start(sample_videos: Path) -> None:
    assert probe_video(sample_videos / "cockatoo.mp4").has_audio
    assert not probe_video(sample_videos / "bikes.mp4").has_audio
    city = probe_video(sample_videos / "cityCC0.mpg")  # an MPEG-2 program stream starting at pts 0.54 s
    assert city.start_time_s == pytest.approx(0.54)
    assert city.duration_s == pytest.approx(7.6)


@pytest.mark.parametrize(
    ("duration", "clip", "expected"),
    [
        (10.0, 10.0, [(0.0, 10.0)]),
        (4.0, 10.0, [(0.0, 4.0)]),  # shorter than a clip: one clip covering it
        (79.5, 10.0, [(i * 10.0, i * 10.0 + 10.0) for i in range(7)] + [(70.0, 79.5)]),  # tail 9.5 s >= 5 s
        (23.0, 10.0, [(0.0, 10.0), (10.0, 23.0)]),  # tail 3 s < half a clip: merged
        (25.0, 10.0, [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]),  # tail exactly half a clip: its own
        (0.5, 10.0, []),  # below min_clip_seconds
        (0.0, 10.0, []),
    ],
)
def test_clip_windows(duration: float, clip: float, expected: list[tuple[float, float]]) -> None:
    windows = clip_windows(duration, clip)
    assert [w for pair in windows for w in pair] == pytest.approx([w for pair in expected for w in pair])
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert end == start  # consecutive, no gaps, no overlaps


def test_clip_windows_rejects_nonpositive_clip() -> None:
    with pytest.raises(ValueError, match="clip_seconds"):
        clip_windows(10.0, 0.0)


def test_sample_timestamps_are_bin_centres() -> None:
    assert sample_timestamps(0.0, 8.0, 4) == pytest.approx([1.0, 3.0, 5.0, 7.0])
    assert sample_timestamps(10.0, 12.0, 1) == pytest.approx([11.0])
    with pytest.raises(ValueError):
        sample_timestamps(0.0, 1.0, 0)
    with pytest.raises(ValueError):
        sample_timestamps(2.0, 1.0, 3)


def _reference(frames: np.ndarray, times: np.ndarray, stamps: list[float]) -> np.ndarray:
    """The frames a sequential decode gives at ``stamps``: first frame at or after each (else the last)."""
    idx = np.minimum(np.searchsorted(times, np.asarray(stamps) - 1e-9), len(times) - 1)
    return frames[idx]


@pytest.mark.parametrize(
    ("name", "end_s"),
    [
        ("bikes.mp4", None),  # h264 with B-frames, 10 s
        ("vtest.avi", 14.0),  # msmpeg4 AVI, a keyframe every 25 s
        ("cityCC0.mpg", None),  # MPEG-2 PS whose pts start at 0.54 s (demuxer seeks overshoot)
        ("box.mp4", 6.0),  # packets carry decode order as pts: read in one pass
    ],
)
def test_seek_sampling_matches_sequential_decode(sample_videos: Path, name: str, end_s: float | None) -> None:
    path = sample_videos / name
    frames, times = decode_all_frames(path, 0.0, end_s)
    span = end_s if end_s is not None else probe_video(path).duration_s
    # bin centres, exact frame times, the first frame, and out-of-order/repeated requests
    stamps = sample_timestamps(0.0, span - 1.0, 8) + [float(times[7]), 0.0, float(times[3]) + 1e-4, 1.3, 1.3]
    stamps = stamps[::-1]
    got = read_frames_at(path, stamps)
    assert got.dtype == np.uint8 and got.shape == (len(stamps), *frames.shape[1:])
    expected = _reference(frames, times, stamps)
    for i, t in enumerate(stamps):
        assert np.array_equal(got[i], expected[i]), f"{name}: frame at {t:.3f} s differs"


def test_sequential_fallback_matches_seeking(sample_videos: Path) -> None:
    path = sample_videos / "cockatoo.mp4"
    stamps = sample_timestamps(0.0, 14.0, 6) + [13.5]  # 13.5 s: after the last keyframe
    seeking = read_frames_at(path, stamps, max_side=224)
    sequential = read_frames_at(path, stamps, max_side=224, seek=False)
    assert np.array_equal(seeking, sequential)


def test_max_side_downscales_keeping_aspect(sample_videos: Path) -> None:
    frames = read_frames_at(sample_videos / "dog.mp4", [0.2, 1.0], max_side=224)
    assert frames.shape == (2, 126, 224, 3)  # 1920x1080 -> 224x126
    small = read_frames_at(sample_videos / "carphone_pristine.mp4", [1.0], max_side=224)
    assert small.shape == (1, 144, 176, 3)  # never upscaled


@pytest.mark.parametrize("name", ["realshort.mp4", "bikes.mp4"])  # bikes: B-frames, skipped when not needed
def test_time_past_the_end_gives_last_frame(sample_videos: Path, name: str) -> None:
    path = sample_videos / name
    frames, _ = decode_all_frames(path)
    end = probe_video(path).duration_s
    got = read_frames_at(path, [end - 0.5, end + 0.2, end - 0.01])
    assert np.array_equal(got[1], frames[-1])
    assert np.array_equal(got[2], frames[-1])


def test_zero_byte_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(NotAVideoError, match="empty file") as info:
        probe_video(path)
    assert info.value.reason == "not_a_video"


def test_text_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "page.mp4"
    path.write_text("<html><body>This video is unavailable</body></html>\n")
    with pytest.raises(NotAVideoError, match="page.mp4"):
        probe_video(path)
    with pytest.raises(NotAVideoError):
        read_frames_at(path, [0.0])


def test_audio_only_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        tone = (np.sin(np.arange(8000) * 2 * math.pi * 440 / 8000) * 3000).astype("<i2")
        out.writeframes(tone.tobytes())
    with pytest.raises(NotAVideoError, match="no video stream"):
        probe_video(path)


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg", "photo.mp4"])
def test_still_image_is_not_a_video(tmp_path: Path, name: str) -> None:
    from PIL import Image

    path = tmp_path / name
    image_format = "PNG" if name.endswith("png") else "JPEG"  # photo.mp4: a JPEG named .mp4
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(path, format=image_format)
    with pytest.raises(NotAVideoError, match="still image"):
        probe_video(path)


def test_errors_survive_pickling() -> None:  # Ray ships exceptions between processes
    error = pickle.loads(pickle.dumps(VideoDecodeError("/x/a.mp4", "truncated")))
    assert isinstance(error, VideoDecodeError) and error.reason == "decode_error"
    assert str(error) == "/x/a.mp4: truncated" and error.path == "/x/a.mp4"


def test_mp4_cut_before_its_index_is_a_decode_error(sample_videos: Path, tmp_path: Path) -> None:
    data = (sample_videos / "bikes.mp4").read_bytes()  # moov (the index) sits at the end of this file
    path = tmp_path / "bikes_cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(VideoDecodeError, match="truncated") as info:
        probe_video(path)
    assert info.value.reason == "decode_error"


def test_truncated_mp4_serves_existing_frames_then_fails(sample_videos: Path, tmp_path: Path) -> None:
    data = (sample_videos / "cup.mp4").read_bytes()  # moov first: a cut file still opens
    path = tmp_path / "cup_cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    info = probe_video(path)  # the header still claims the full 8.1 s
    assert info.duration_s == pytest.approx(8.1, abs=0.05)
    early = read_frames_at(path, [0.1, 0.5])
    assert np.array_equal(early, read_frames_at(sample_videos / "cup.mp4", [0.1, 0.5]))
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_frames_at(path, [7.5])
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_frames_at(path, [7.5], seek=False)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize(
    ("suffix", "extra_args"),
    [
        (".h264", ["-bsf:v", "h264_mp4toannexb"]),  # raw stream: no duration, no pts, cannot seek
        (".ts", []),  # MPEG-TS: pts start at 1.48 s
    ],
)
def test_same_stream_in_other_containers_gives_same_frames(
    sample_videos: Path, tmp_path: Path, suffix: str, extra_args: list[str]
) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg binary to remux")
    source = sample_videos / "bikes.mp4"
    remuxed = tmp_path / f"bikes{suffix}"
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", *extra_args, str(remuxed)]
    subprocess.run(command, check=True)
    info = probe_video(remuxed)
    assert info.duration_s == pytest.approx(10.0, abs=0.05)
    assert info.num_frames == pytest.approx(250, abs=2)
    stamps = sample_timestamps(0.0, 10.0, 5) + [9.99]
    expected = read_frames_at(source, stamps)
    assert np.array_equal(read_frames_at(remuxed, stamps), expected)
    assert np.array_equal(read_frames_at(remuxed, stamps, seek=False), expected)
