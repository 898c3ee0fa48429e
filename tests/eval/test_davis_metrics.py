"""J, F and their statistics against hand-computed cases and an independent scipy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from vito_eval.davis_metrics import (
    boundary_f_measure,
    dilate_disk,
    evaluate_sequence,
    region_similarity,
    score_statistics,
    seg2bmap,
    summarise,
)


def square(shape, top, left, size, width=None):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + (width or size)] = True
    return m


def test_region_similarity_hand_cases():
    a = square((8, 8), 0, 0, 4)
    s = square((8, 8), 0, 2, 4)
    assert region_similarity(a, s) == pytest.approx(8 / 24)
    assert region_similarity(a, a) == 1.0
    assert region_similarity(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # empty union counts as perfect
    assert region_similarity(a, np.zeros_like(a)) == 0.0
    void = np.zeros((8, 8), dtype=bool)
    void[:, 4:] = True  # hides the part of s outside a
    assert region_similarity(a, s, void) == pytest.approx(8 / 16)


def test_seg2bmap_matches_hand_drawn_boundary():
    seg = square((6, 6), 1, 1, 3)
    expected = np.array(
        [
            [1, 1, 1, 1, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    # An object running into the last row and column has no boundary along the image border there.
    edge = np.zeros((3, 3), dtype=bool)
    edge[1:, 1:] = True
    np.testing.assert_array_equal(seg2bmap(edge), np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=bool))


@pytest.mark.parametrize("radius", [1, 2, 3, 8, 12])
def test_dilate_disk_equals_scipy_binary_dilation_with_a_skimage_disk(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((61, 87)) < 0.02
    mask[0, 0] = mask[-1, -1] = mask[0, -1] = True  # the image border must behave as zero padding
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = xx**2 + yy**2 <= radius**2  # skimage.morphology.disk
    np.testing.assert_array_equal(dilate_disk(mask, radius), ndimage.binary_dilation(mask, structure=disk))


def test_boundary_f_within_and_beyond_the_tolerance():
    shape = (100, 100)  # diagonal 141.4 -> ceil(0.008 * 141.4) = 2 pixels of tolerance
    gt = square(shape, 20, 20, 40)
    assert boundary_f_measure(gt, gt) == 1.0
    assert boundary_f_measure(np.roll(gt, 1, axis=1), gt) == 1.0
    assert boundary_f_measure(np.roll(gt, 2, axis=1), gt) == 1.0
    # Shifted 3 px right: counted by hand on the 160-pixel boundaries, 84 pixels match each way.
    assert boundary_f_measure(np.roll(gt, 3, axis=1), gt) == pytest.approx(84 / 160)
    # A pixel tolerance can be given directly (bound_th >= 1).
    assert boundary_f_measure(np.roll(gt, 3, axis=1), gt, bound_th=3) == 1.0


def test_boundary_f_edge_cases():
    empty = np.zeros((20, 20), dtype=bool)
    obj = square((20, 20), 5, 5, 5)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, obj) == 0.0  # P=1, R=0
    assert boundary_f_measure(obj, empty) == 0.0  # P=0, R=1


def _reference_f(fg, gt, bound_th=0.008):
    """The davis2017-evaluation formula with scipy's dilation, written independently as an oracle."""
    bound = math.ceil(bound_th * np.linalg.norm(fg.shape))
    grid = np.arange(-bound, bound + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = xx**2 + yy**2 <= bound**2
    fb, gb = seg2bmap(fg), seg2bmap(gt)
    p = (fb & ndimage.binary_dilation(gb, structure=disk)).sum() / fb.sum()
    r = (gb & ndimage.binary_dilation(fb, structure=disk)).sum() / gb.sum()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_boundary_f_matches_reference_on_random_blobs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = ndimage.gaussian_filter(rng.random((120, 200)), 6) > 0.5
        pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 4))) ^ (rng.random(gt.shape) < 0.01)
        assert boundary_f_measure(pred, gt) == pytest.approx(_reference_f(pred, gt))


def test_statistics_mean_recall_decay():
    stats = score_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=float))
    assert stats.mean == 0.5
    assert stats.recall == 0.5
    assert stats.decay == 1.0  # bins [0:3] and [5:8] as davis2017-evaluation computes them


def test_evaluate_sequence_excludes_first_and_last_frames_and_treats_void_as_background():
    gt = np.zeros((5, 10, 10), dtype=np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 0, :] = 255  # void border
    pred = np.where(gt == 255, 0, gt)
    pred[0] = 0  # wrong on the first and last frames only: not evaluated
    pred[-1] = 0
    (obj,) = evaluate_sequence("seq", gt, pred)
    assert obj.j.shape == (3,)
    assert np.all(obj.j == 1.0) and np.all(obj.f == 1.0)
    pred[2] = 0  # a middle frame lost: J = F = 0 there
    (obj,) = evaluate_sequence("seq", gt, pred)
    np.testing.assert_allclose(obj.j, [1, 0, 1])
    summary = summarise([obj])
    assert summary.j_mean == pytest.approx(2 / 3)
    assert summary.jf_mean == pytest.approx((summary.j_mean + summary.f_mean) / 2)


def test_summary_is_a_mean_over_objects_not_frames():
    gt = np.zeros((4, 8, 8), dtype=np.uint8)
    gt[:, :4, :4] = 1
    gt[:, 4:, 4:] = 2
    pred = gt.copy()
    pred[1:3][pred[1:3] == 2] = 0  # object 2 lost in both evaluated frames
    objects = evaluate_sequence("seq", gt, pred)
    assert [o.object_id for o in objects] == [1, 2]
    assert summarise(objects).j_mean == pytest.approx(0.5)
