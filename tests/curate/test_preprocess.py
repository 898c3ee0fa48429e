"""The decode stage's torch-only resize gives the frames torchvision's resize + centre crop gave, bit for bit.

The reference below is the code the decode stage ran before (torchvision.transforms.v2.functional), on
frames decoded from the sample videos as the build decodes them; and the decode stage must not import
torchvision (what the torch-only resize is for: ~3 CPU s of start-up per decode actor).
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from videonet_curate.labeling import LabelingConfig
from videonet_curate.models.efficientnet_lite0 import EFFICIENTNET_LITE0_PREPROCESS
from videonet_curate.preprocess import ModelError, PreprocessSpec, resize_frames
from videonet_curate.video import read_frames_at, sample_timestamps


def torchvision_resize(frames: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """What ``models.base.resize_frames`` was: torchvision's tensor resize, then its centre crop."""
    batch = torch.as_tensor(frames)
    if batch.ndim == 3:
        batch = batch[None]
    batch = batch.permute(0, 3, 1, 2)
    mode = InterpolationMode(spec.interpolation)
    if spec.resize_mode == "squash":
        return TF.resize(batch, [spec.size, spec.size], interpolation=mode, antialias=True)
    batch = TF.resize(batch, [spec.resize_to], interpolation=mode, antialias=True)
    return TF.center_crop(batch, [spec.size, spec.size])


@pytest.fixture(scope="module")
def decoded(sample_videos) -> dict[str, np.ndarray]:
    """8 frames of a 2-s clip from three sample videos of different sizes, decoded as the build does."""
    config = LabelingConfig()
    frames = {}
    for name in ("bikes.mp4", "carphone_pristine.mp4", "cockatoo.mp4"):
        stamps = sample_timestamps(0.0, 2.0, config.frames_per_clip)
        frames[name] = np.asarray(
            read_frames_at(sample_videos / name, stamps, max_side=config.decode_max_side)
        )
    return frames


SPECS = {
    "efficientnet-lite0": EFFICIENTNET_LITE0_PREPROCESS,
    "bilinear-clip": PreprocessSpec(224, 1.0, (0.5,) * 3, (0.5,) * 3, interpolation="bilinear"),
    "squash-bicubic": PreprocessSpec(96, 1.0, (0.5,) * 3, (0.5,) * 3, resize_mode="squash"),
    "nearest-upscale": PreprocessSpec(300, 0.875, (0.5,) * 3, (0.5,) * 3, interpolation="nearest"),
}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_torch_resize_equals_torchvision_on_sample_frames(decoded, spec_name: str) -> None:
    spec = SPECS[spec_name]
    for name, frames in decoded.items():
        assert frames.shape[0] == 8 and frames.dtype == np.uint8, name
        # the whole clip, a single frame (torchvision restrides that case), and the frames turned portrait
        for batch in (frames, frames[3], np.ascontiguousarray(frames.transpose(0, 2, 1, 3))):
            ours, theirs = resize_frames(batch, spec), torchvision_resize(batch, spec)
            assert ours.dtype == theirs.dtype == torch.uint8
            assert (
                ours.shape == theirs.shape == (len(batch) if batch.ndim == 4 else 1, 3, spec.size, spec.size)
            )
            assert torch.equal(ours, theirs), (name, spec_name, batch.shape)


def test_padding_crop_and_bad_specs_match_torchvision() -> None:
    small = np.random.default_rng(1).integers(0, 256, size=(2, 20, 30, 3), dtype=np.uint8)
    spec = PreprocessSpec(32, 1.0, (0.5,) * 3, (0.5,) * 3, resize_mode="squash")
    assert torch.equal(resize_frames(small, spec), torchvision_resize(small, spec))
    with pytest.raises(ModelError, match="interpolation 'lanczos'"):
        PreprocessSpec(32, 1.0, (0.5,) * 3, (0.5,) * 3, interpolation="lanczos")
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_frames(small.astype(np.float32), spec)


def test_the_decode_stage_does_not_import_torchvision(sample_videos) -> None:
    """A decode actor's work in a fresh interpreter: its constructor given the model's spec pickled (as
    Ray hands it over; no model actor to ask: ``described`` is ``[None]``), one clip decoded; then nothing
    of torchvision, timm or open_clip is loaded."""
    spec = pickle.dumps(EFFICIENTNET_LITE0_PREPROCESS)
    code = (
        "import pickle, sys\n"
        "from videonet_curate.labeling import FetchedClip, LabelingConfig\n"
        "from videonet_curate.stages import DecodeWorker\n"
        f"worker = DecodeWorker(LabelingConfig(), [None], pickle.loads({spec!r}))\n"
        f"row = {{'clip_id': 'c', 'start_s': 0.0, 'end_s': 2.0}}\n"
        f"meta, frames = worker.decode(FetchedClip(row, {str(sample_videos / 'bikes.mp4')!r}))\n"
        "assert frames.shape == (8, 3, 224, 224), (meta, None if frames is None else frames.shape)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm', 'open_clip')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
