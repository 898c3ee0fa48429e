"""Clip scoring from per-frame probabilities, ImageNet names, and the duplicated-name policy."""

from __future__ import annotations

import numpy as np
import pytest

from videonet_curate.classify import ScoringInputError, fold_duplicate_names, score_clip
from videonet_curate.imagenet import (
    DUPLICATE_NAME_TWINS,
    IMAGENET_CLASSNAMES,
    label_name,
    unique_label_names,
    wnid,
    wordnet_description,
)


def one_hot_mix(weights: dict[int, float]) -> np.ndarray:
    row = np.zeros(1000)
    for index, weight in weights.items():
        row[index] = weight
    return row


def test_mean_over_frames_label_score_margin_and_top5():
    frames = np.stack(
        [
            one_hot_mix({1: 0.6, 2: 0.3, 3: 0.1}),
            one_hot_mix({1: 0.2, 2: 0.5, 4: 0.3}),
            one_hot_mix({1: 0.7, 5: 0.2, 6: 0.1}),
        ]
    )
    clip = score_clip(frames)
    assert clip.label == 1 and clip.label_name == IMAGENET_CLASSNAMES[1]
    assert clip.score == pytest.approx(0.5)
    assert clip.margin == pytest.approx(0.5 - 0.8 / 3)
    assert clip.top5_labels == [1, 2, 4, 5, 3]  # 0.1/3 for 3 and 6: the tie goes to the lower index
    np.testing.assert_allclose(clip.top5_scores, [0.5, 0.8 / 3, 0.1, 0.2 / 3, 0.1 / 3])
    row = clip.as_row()
    assert set(row) == {"label", "label_name", "score", "margin", "top5_labels", "top5_scores"}
    assert isinstance(row["label"], int) and isinstance(row["score"], float)


def test_mean_of_probabilities_not_majority_vote():
    # two frames vote weakly for 10, one frame is sure of 20: the mean prefers 20
    frames = np.stack([one_hot_mix({10: 0.4, 20: 0.3, 30: 0.3})] * 2 + [one_hot_mix({20: 1.0})])
    assert score_clip(frames).label == 20


def test_identical_prototypes_count_once_not_twice():
    # A CLIP scorer's two "missile" rows are identical: same logit, same probability. Merging must give
    # what a 999-class softmax (the duplicate prototype dropped) gives; summing would give 0.6 and label
    # the clip "missile" although class 100 is the more likely one.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 1000))
    logits[:, 744] = logits[:, 657]
    logits[:, 836] = logits[:, 837]
    logits[0, 657] = logits[0, 744] = 4.0
    logits[0, 100] = 4.4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    kept = [c for c in range(1000) if c not in DUPLICATE_NAME_TWINS]
    expected = np.exp(logits[:, kept]) / np.exp(logits[:, kept]).sum(axis=1, keepdims=True)
    folded = fold_duplicate_names(probs)
    np.testing.assert_allclose(folded[:, kept], expected, rtol=1e-10)
    assert np.all(folded[:, list(DUPLICATE_NAME_TWINS)] == 0)
    clip = score_clip(probs[:1])
    assert clip.label == 100 and 744 not in clip.top5_labels
    assert clip.score == pytest.approx(expected[0, kept.index(100)])
    summed = probs[0, 657] + probs[0, 744]
    assert summed > probs[0, 100]  # the old rule (summing) would have labelled this clip "missile"


def test_twins_merge_by_the_larger_probability():
    frames = one_hot_mix({657: 0.3, 744: 0.3, 100: 0.4})[None]
    clip = score_clip(frames)
    assert clip.label == 100 and clip.score == pytest.approx(0.4 / 0.7)
    assert clip.top5_labels[:2] == [100, 657] and clip.top5_scores[1] == pytest.approx(0.3 / 0.7)
    assert score_clip(frames, fold_duplicates=False).label == 100


def test_sunglasses_fold_onto_the_dark_glasses_synset():
    clip = score_clip(one_hot_mix({836: 0.5, 837: 0.1, 3: 0.4})[None])
    assert clip.label == 837 and clip.label_name == "sunglasses"
    assert clip.score == pytest.approx(0.5 / 0.9)
    assert wnid(837) == "n04356056" and wnid(836) == "n04355933"
    assert wnid(657) == "n03773504" and wnid(744) == "n04008634"


def test_fold_keeps_total_probability():
    probs = np.random.default_rng(0).dirichlet(np.ones(1000), size=4)
    folded = fold_duplicate_names(probs)
    np.testing.assert_allclose(folded.sum(axis=1), 1.0)
    assert np.all(folded[:, list(DUPLICATE_NAME_TWINS)] == 0)


def test_label_names_are_unique_and_wordnet_available():
    assert len(IMAGENET_CLASSNAMES) == 1000 and len(set(IMAGENET_CLASSNAMES)) == 998
    names = unique_label_names()
    assert len(set(names)) == 1000
    assert label_name(744) == "projectile, missile" and label_name(836) == "sunglass"
    assert label_name(89) == "sulphur-crested cockatoo" and wnid(89) == "n01819313"
    assert "convex lens" in wordnet_description(836, detailed=True)  # WordNet's 836 is a burning glass
    with pytest.raises(IndexError, match="1000"):
        label_name(1000)


def test_a_certain_clip_has_full_margin_and_short_top5():
    clip = score_clip(one_hot_mix({42: 1.0})[None])
    assert clip.label == 42 and clip.margin == pytest.approx(1.0) and clip.top5_labels == [42]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 999)), "shape"),
        (np.zeros((0, 1000)), "no frames"),
        (np.full((1, 1000), np.nan), "NaN"),
        (-np.ones((1, 1000)), "negative"),
    ],
)
def test_bad_input_is_a_typed_error(bad, message):
    with pytest.raises(ScoringInputError, match=message):
        score_clip(bad)


def test_the_drivers_checks_read_names_without_importing_torch() -> None:
    """A build's driver checks ``--model`` and reads the class names before any stage starts: neither
    imports torch, torchvision, timm or the open_clip package (seconds of CPU the model actors spend
    anyway); the names read so are open_clip's own."""
    import subprocess
    import sys

    import open_clip

    code = (
        "import sys\n"
        "from videonet_curate.build_cli import _check_model\n"
        "from videonet_curate.imagenet import IMAGENET_CLASSNAMES, unique_label_names\n"
        "_check_model('efficientnet-lite0', 'openai', 'auto')\n"
        "assert len(unique_label_names()) == 1000\n"
        "heavy = ('torch', 'torchvision', 'timm', 'open_clip')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "print(repr(list(IMAGENET_CLASSNAMES)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, names = out.stdout.splitlines()
    assert loaded == "[]"
    assert names == repr(list(open_clip.IMAGENET_CLASSNAMES))
