"""The default scorer: EfficientNet-Lite0 from the installed wheel, its classifier rows as prototypes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from videonet_curate.classify import score_clip
from videonet_curate.models import (
    EFFICIENTNET_LITE0_PREPROCESS,
    CheckpointMismatchError,
    UnknownModelError,
    build_efficientnet_lite0,
    load_scorer,
)
from videonet_curate.models.efficientnet_lite0 import (
    efficientnet_lite0_checkpoint_path,
    map_state_dict_in_order,
)


def evenly_spaced_frames(path: Path, count: int = 8) -> np.ndarray:
    """``count`` RGB frames at evenly spaced times inside the video (seek, then decode forward)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        frames = []
        for t in np.linspace(0.0, duration, count + 2)[1:-1]:
            container.seek(int(t / stream.time_base), stream=stream)
            frame = next(f for f in container.decode(stream) if f.time is not None and f.time >= t - 1e-3)
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


@pytest.fixture(scope="module")
def scorer():
    return load_scorer("efficientnet-lite0")


def test_scorer_identity(scorer):
    assert scorer.model_id.startswith("efficientnet-lite0:timm/tf_efficientnet_lite0:sha256-57934424")
    assert scorer.prototype_set == "classifier-rows"
    assert scorer.embedding_dim == 1280
    assert tuple(scorer.prototypes.shape) == (1000, 1280)
    assert scorer.preprocess_spec == EFFICIENTNET_LITE0_PREPROCESS


def test_classifier_prototypes_reproduce_the_models_own_logits(scorer):
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 200, 300, 3), dtype=np.uint8)
    batch = scorer.preprocess(frames)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    with torch.inference_mode():
        own_logits = scorer.model(batch)
    embeddings = scorer.embed(batch)
    assert embeddings.shape == (3, 1280)
    torch.testing.assert_close(scorer.class_logits(embeddings), own_logits, rtol=0, atol=1e-5)
    probs = scorer.class_probabilities(embeddings)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_cockatoo_clip_is_labelled_sulphur_crested_cockatoo(scorer, sample_videos):
    _, probs = scorer.score_frames(evenly_spaced_frames(sample_videos / "cockatoo.mp4"))
    clip = score_clip(probs)
    assert 89 in clip.top5_labels
    assert clip.label == 89, clip  # measured: mean p = 0.26, next class 0.03
    assert clip.label_name == "sulphur-crested cockatoo"


def test_dog_clip_is_labelled_samoyed(scorer, sample_videos):
    _, probs = scorer.score_frames(evenly_spaced_frames(sample_videos / "dog.mp4"))
    clip = score_clip(probs)
    assert clip.label == 258 and clip.label_name == "Samoyed"
    assert clip.score > 0.5 and clip.margin > 0.4  # measured: 0.85, next class 0.02


def test_class_subset_reports_imagenet_indices(sample_videos):
    subset = [89, 258, 504]
    scorer = load_scorer("efficientnet-lite0", class_indices=subset)
    embeddings, probs = scorer.score_frames(evenly_spaced_frames(sample_videos / "dog.mp4", count=2))
    assert probs.shape == (2, 1000)
    outside = np.setdiff1d(np.arange(1000), subset)
    assert np.all(probs[:, outside] == 0)
    np.testing.assert_allclose(probs[:, subset].sum(axis=1), 1.0, rtol=1e-5)
    clip = score_clip(probs)
    assert clip.label == 258 and set(clip.top5_labels) <= set(subset)


def test_mismatched_checkpoint_fails_loudly_naming_both_keys():
    target = build_efficientnet_lite0(pretrained=False).state_dict()
    source = torch.load(efficientnet_lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    assert len(source) == len(target) == 296
    broken = OrderedDict(source)
    broken["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    both_keys = r"'_conv_stem.weight' \(16, 3, 3, 3\).*'conv_stem.weight' \(32, 3, 3, 3\)"
    with pytest.raises(CheckpointMismatchError, match=both_keys):
        map_state_dict_in_order(broken, target)
    shuffled = OrderedDict(reversed(list(source.items())))
    with pytest.raises(CheckpointMismatchError, match="_fc.bias"):
        map_state_dict_in_order(shuffled, target)
    with pytest.raises(CheckpointMismatchError, match="295 tensors"):
        map_state_dict_in_order(OrderedDict(list(source.items())[:-1]), target)


def test_loaded_weights_equal_the_shipped_tensors_in_order():
    pretrained = build_efficientnet_lite0(pretrained=True).state_dict()
    source = torch.load(efficientnet_lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    for (_, loaded), (_, shipped) in zip(pretrained.items(), source.items(), strict=True):
        assert torch.equal(loaded, shipped)


def test_preprocess_rejects_float_frames(scorer):
    with pytest.raises(ValueError, match="uint8 RGB"):
        scorer.preprocess(np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_unknown_spec_lists_valid_specs():
    with pytest.raises(UnknownModelError, match="efficientnet-lite0.*openclip:ARCH"):
        load_scorer("resnet-9000")
