"""Label propagation: context frames, radius mask, top-k softmax, exact propagation with oracle features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vito_eval.propagation import (
    PRESETS,
    PropagationConfig,
    context_frames,
    downsample_labels,
    propagate_labels,
    propagate_step,
    propagate_step_windowed,
    radius_mask,
    upsample_to_labels,
)


def test_presets_follow_the_published_protocols():
    assert PRESETS["crw"] == PropagationConfig(n_context=20, topk=10, radius=12.0, temperature=0.05)
    assert PRESETS["vfs"].temperature == 0.07 and PRESETS["vfs"].n_context == 20
    with pytest.raises(ValueError):
        PropagationConfig(temperature=0)


def test_context_is_first_frame_plus_preceding_frames_padded_with_the_first():
    assert context_frames(5, 3) == [0, 2, 3, 4]
    assert context_frames(1, 4) == [0, 0, 0, 0, 0]  # CRW pads the video front with copies of frame 0
    assert context_frames(25, 20) == [0] + list(range(5, 25))


def test_radius_mask_is_a_strict_euclidean_ball():
    mask = radius_mask(3, 4, 1.5)
    assert mask.shape == (12, 12)
    centre = 1 * 4 + 1  # cell (1, 1)
    inside = {(y, x) for y in range(3) for x in range(4) if math.hypot(y - 1, x - 1) < 1.5}
    assert {(i // 4, i % 4) for i in mask[:, centre].nonzero().flatten().tolist()} == inside
    assert not radius_mask(1, 3, 1.0)[0, 1]  # distance exactly the radius is outside (CRW uses <)


def test_topk_softmax_weights_with_temperature():
    # One query, 3 keys in frame 0 (never masked); features chosen to give affinities 1, 0.6, 0.
    query = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # the first query position is the one checked
    keys = torch.tensor([[[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]]])  # (T=1, C=2, P=3)
    labels = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])  # (T, K=2, P)
    local = torch.ones(3, 3, dtype=torch.bool)
    cfg = PropagationConfig(topk=2, temperature=0.1)
    out = propagate_step(query, keys, labels, local, cfg)
    w = torch.softmax(torch.tensor([1.0, 0.6]) / 0.1, 0)
    torch.testing.assert_close(out[:, 0], torch.tensor([w[0], w[1]]))
    out1 = propagate_step(query, keys, labels, local, PropagationConfig(topk=1, temperature=0.1))
    torch.testing.assert_close(out1[:, 0], torch.tensor([1.0, 0.0]))


def test_radius_masks_short_term_context_but_not_the_first_frame():
    # Frame 0: a weak match (label 1). Frame 1 (short-term): a perfect match (label 2) far from the query.
    h, w = 1, 6
    query = torch.zeros(2, 6)
    query[0, 0] = 1.0  # the query cell is at x=0
    keys = torch.zeros(2, 2, 6)
    keys[0, :, 0] = torch.tensor([0.6, 0.8])
    keys[1, :, 5] = torch.tensor([1.0, 0.0])  # x=5: outside radius 3
    labels = torch.zeros(2, 3, 6)
    labels[:, 0] = 1.0
    labels[0, :, 0] = torch.tensor([0.0, 1.0, 0.0])
    labels[1, :, 5] = torch.tensor([0.0, 0.0, 1.0])
    near = propagate_step(query, keys, labels, radius_mask(h, w, 3), PropagationConfig(topk=1, radius=3))
    assert near[:, 0].argmax() == 1
    far = propagate_step(query, keys, labels, radius_mask(h, w, 10), PropagationConfig(topk=1, radius=10))
    assert far[:, 0].argmax() == 2


def _translating_video(n_frames=6, h=6, w=10):
    """Label maps of a 2x2 object moving one cell right per frame, and one-hot 'oracle' features of them."""
    labels = torch.zeros(n_frames, h, w, dtype=torch.long)
    for t in range(n_frames):
        labels[t, 1:3, 1 + t : 3 + t] = 1
    feats = F.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    return labels, feats


@pytest.mark.parametrize("preset", ["crw", "vfs", "dino"])
def test_oracle_features_propagate_exactly(preset):
    labels, feats = _translating_video()
    first = F.one_hot(labels[0], 2).permute(2, 0, 1).float()
    soft = propagate_labels(feats, first, PRESETS[preset])
    assert torch.equal(soft.argmax(1), labels)
    torch.testing.assert_close(soft.sum(1), torch.ones_like(soft[:, 0]))


def test_uninformative_features_do_not_propagate_a_moving_object():
    labels, _ = _translating_video()
    feats = torch.ones(labels.shape[0], 4, *labels.shape[1:])  # every cell looks the same
    first = F.one_hot(labels[0], 2).permute(2, 0, 1).float()
    soft = propagate_labels(feats, first, PropagationConfig(topk=50))
    assert not torch.equal(soft.argmax(1), labels)


def test_label_resampling_keeps_grid_aligned_masks():
    full = torch.zeros(32, 48, dtype=torch.long)
    full[8:24, 16:40] = 1
    onehot = F.one_hot(full, 2).permute(2, 0, 1).float()
    cells = downsample_labels(onehot, (4, 6))
    assert torch.equal(cells.argmax(0), full[::8, ::8])
    assert set(cells.flatten().tolist()) <= {0.0, 1.0}  # 8-pixel cells never straddle the mask edge
    back = upsample_to_labels(cells, (32, 48))
    # Bilinear upsampling then argmax rounds each rectangle corner by 3+2+1 pixels and is exact elsewhere.
    assert int((back != full).sum()) == 4 * 6


@pytest.mark.parametrize(("radius", "tile"), [(1.0, 2), (2.5, 3), (3.0, 8), (30.0, 4)])
def test_windowed_step_equals_the_dense_reference(radius, tile):
    gen = torch.Generator().manual_seed(int(radius * 10) + tile)
    h, w, n_keys = 7, 9, 4
    feats = F.normalize(torch.randn(n_keys + 1, 5, h * w, generator=gen), dim=1)
    labels = torch.softmax(torch.randn(n_keys, 3, h * w, generator=gen), dim=1)
    cfg = PropagationConfig(topk=6, radius=radius, temperature=0.1, tile=tile)
    local = radius_mask(h, w, radius)
    dense = propagate_step(feats[-1], feats[:-1], labels, local, cfg)
    windowed = propagate_step_windowed(feats[-1], feats[:-1], labels, local, cfg, (h, w))
    torch.testing.assert_close(windowed, dense)
