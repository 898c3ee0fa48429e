"""mIoU from a confusion matrix: hand-computed cases and a direct per-class set computation."""

from __future__ import annotations

import numpy as np
import pytest

from vito_eval.seg_metrics import confusion_matrix, scores_from_confusion


def test_confusion_counts_and_ignore_index():
    label = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, label, num_classes=3)
    expected = np.zeros((3, 3), dtype=np.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0)]:  # the 255 pixel is dropped
        expected[g, p] += 1
    np.testing.assert_array_equal(conf, expected)
    scores = scores_from_confusion(conf)
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3, IoU_1 = 2 / (2 + 3 - 2) = 2/3, IoU_2 = 0 / (1 + 0) = 0
    np.testing.assert_allclose(scores.iou, [1 / 3, 2 / 3, 0.0])
    assert scores.miou == pytest.approx(1 / 3)
    assert scores.pixel_accuracy == pytest.approx(3 / 5)
    assert scores.n_pixels == 5


def test_absent_classes_are_left_out_of_the_mean():
    label = np.array([0, 0, 1, 1])
    conf = confusion_matrix(label.copy(), label, num_classes=5)
    scores = scores_from_confusion(conf)
    assert np.isnan(scores.iou[2:]).all()
    assert scores.miou == 1.0


def test_miou_equals_a_direct_set_computation_over_a_dataset():
    rng = np.random.default_rng(0)
    k = 6
    labels = [rng.integers(0, k, size=(17, 23)) for _ in range(4)]
    preds = [np.where(rng.random(lab.shape) < 0.7, lab, rng.integers(0, k, size=lab.shape)) for lab in labels]
    for lab in labels:
        lab[rng.random(lab.shape) < 0.1] = 255
    conf = sum(confusion_matrix(p, lab, k) for p, lab in zip(preds, labels, strict=True))
    all_lab = np.concatenate([lab.ravel() for lab in labels])
    all_pred = np.concatenate([p.ravel() for p in preds])
    valid = all_lab != 255
    direct = []
    for c in range(k):
        inter = np.sum((all_lab == c) & (all_pred == c) & valid)
        union = np.sum(((all_lab == c) | (all_pred == c)) & valid)
        direct.append(inter / union)
    scores = scores_from_confusion(conf)
    np.testing.assert_allclose(scores.iou, direct)
    assert scores.miou == pytest.approx(np.mean(direct))


def test_out_of_range_labels_are_an_error():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        confusion_matrix(np.zeros(3, dtype=int), np.array([0, 1, 7]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros(3, dtype=int), np.zeros(4, dtype=int), 3)
