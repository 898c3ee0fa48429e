"""Water-filling, top-per-class selection, TV/KL, target files and the table-level rebalance."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pytest
from manifest_rows import manifest_row

from videonet_curate.manifest import rows_to_table, validate
from videonet_curate.rebalance import (
    RebalanceError,
    apply_rebalance,
    kl_divergence,
    per_class_cap,
    rebalance,
    select_top_per_class,
    total_variation,
    water_fill,
)
from videonet_curate.targets import IMAGENET_NUM_CLASSES, TargetError, load_target


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


@pytest.mark.parametrize(
    ("available", "target", "budget", "expected"),
    [
        # classic water-filling: cap x = 6 gives 6 + 5 + 1 = 12
        ([10, 5, 1], uniform(3), 12, [6, 5, 1]),
        # one more than a full level: the remainder goes to the open class (only class 0 is open)
        ([10, 5, 1], uniform(3), 13, [7, 5, 1]),
        # budget beyond what exists: keep everything
        ([10, 5, 1], uniform(3), 100, [10, 5, 1]),
        ([10, 5, 1], uniform(3), 16, [10, 5, 1]),
        # budget 0: nothing
        ([10, 5, 1], uniform(3), 0, [0, 0, 0]),
        # class 0 absent from the data: the others share; 10 = 4 + 3 + 3 (tie -> lowest index)
        ([0, 5, 10, 10], uniform(4), 10, [0, 4, 3, 3]),
        # non-uniform target 0.5/0.3/0.2 of 10 exactly
        ([10, 10, 10], [0.5, 0.3, 0.2], 10, [5, 3, 2]),
        # target 0.5/0.25/0.25 of 9: ideal 4.5/2.25/2.25, largest remainder gives class 0 the extra clip
        ([10, 10, 10], [0.5, 0.25, 0.25], 9, [5, 2, 2]),
        # a class the target does not want gets nothing, even when the budget is not met
        ([10, 10, 10], [0.5, 0.5, 0.0], 25, [10, 10, 0]),
        # the big class is capped, the small ones keep all: cap x = 80 -> 80 + 15 + 5 = 100
        ([1000, 15, 5], uniform(3), 100, [80, 15, 5]),
    ],
)
def test_water_fill_hand_cases(available, target, budget, expected) -> None:
    quota = water_fill(np.array(available), np.array(target), budget)
    assert quota.tolist() == expected
    assert (quota <= np.array(available)).all()


def test_water_fill_meets_budget_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, 60))
        available = rng.integers(0, 200, size=k)
        target = rng.random(k) * (rng.random(k) > 0.2)
        if target.sum() == 0:
            continue
        budget = int(rng.integers(0, available.sum() + 10))
        quota = water_fill(available, target, budget)
        reachable = available[target > 0].sum()
        assert quota.sum() == min(budget, reachable)
        assert (quota <= available).all() and (quota[target == 0] == 0).all()


def test_water_fill_rejects_bad_input() -> None:
    with pytest.raises(RebalanceError, match="budget"):
        water_fill(np.array([1, 2]), uniform(2), -1)
    with pytest.raises(RebalanceError, match="classes"):
        water_fill(np.array([1, 2, 3]), uniform(2), 1)


def test_total_variation_and_kl_hand_values() -> None:
    counts, target = np.array([3, 1, 0]), np.array([1, 1, 2])
    # p = (.75, .25, 0), q = (.25, .25, .5): TV = (.5 + 0 + .5) / 2
    assert total_variation(counts, target) == pytest.approx(0.5)
    assert total_variation(np.array([2, 2]), np.array([5, 5])) == 0.0
    # KL with no smoothing where p > 0: .75 ln 3 + .25 ln 1 = 0.8240; smoothing changes it by < 1e-4
    assert kl_divergence(counts, target) == pytest.approx(0.75 * math.log(3), abs=1e-4)
    assert kl_divergence(np.array([1, 1]), np.array([1, 1])) == pytest.approx(0.0, abs=1e-12)
    # an empty class in the target stays finite thanks to epsilon, and large
    assert 5 < kl_divergence(np.array([1, 1]), np.array([1, 0])) < 20


def test_select_top_per_class_keeps_highest_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([0.1, np.nan, 0.9, -0.5, 0.2, 0.3])
    keep = select_top_per_class(labels, scores, np.array([2, 1, 0]))
    assert keep.tolist() == [True, False, True, False, True, False]
    # ties go to the earlier row
    keep = select_top_per_class(labels, np.array([0.5, 0.5, 0.5, 1, 1, 1.0]), np.array([2, 1, 1]))
    assert keep.tolist() == [True, True, False, True, False, True]


def test_rebalance_reports_distances_before_and_after() -> None:
    labels = np.array([0] * 8 + [1] * 2)
    scores = np.linspace(0, 1, 10)
    result = rebalance(labels, scores, uniform(2), budget=4)
    assert result.counts_before.tolist() == [8, 2]
    assert result.counts_after.tolist() == [2, 2]
    assert result.keep[labels == 0].tolist() == [False] * 6 + [True] * 2  # the two best of class 0
    assert result.tv_before == pytest.approx(0.3)
    assert result.tv_after == pytest.approx(0.0)
    assert result.kl_after < result.kl_before


def test_per_class_max_with_target() -> None:
    assert per_class_cap(np.array([0.5, 0.25, 0.25]), 10).tolist() == [10, 5, 5]
    labels = np.repeat(np.arange(3), 20)
    result = rebalance(labels, np.zeros(60), np.array([0.5, 0.25, 0.25]), per_class_max=10)
    assert result.counts_after.tolist() == [10, 5, 5]
    both = rebalance(labels, np.zeros(60), uniform(3), per_class_max=10, budget=12)
    assert both.counts_after.tolist() == [4, 4, 4]


def test_labels_outside_the_target_are_an_error() -> None:
    with pytest.raises(RebalanceError, match="labels span"):
        rebalance(np.array([0, 5]), np.zeros(2), uniform(3))


def _table(labels: list[int | None], statuses: list[str]):
    rows = [
        manifest_row(
            i,
            status=status,
            reason=None if status == "kept" else "network",
            label=label,
            label_name=None if label is None else f"class{label}",
            score=0.1 * i,
        )
        for i, (label, status) in enumerate(zip(labels, statuses, strict=True))
    ]
    return rows_to_table(rows)


def test_apply_rebalance_touches_only_kept_rows() -> None:
    table = _table([0, 0, 0, 1, None, 0], ["kept", "kept", "kept", "kept", "failed", "failed"])
    out, result = apply_rebalance(table, uniform(2), budget=2)
    assert out.column("status").to_pylist() == [
        "rebalanced_out",
        "rebalanced_out",
        "kept",
        "kept",
        "failed",
        "failed",
    ]
    assert out.column("reason").to_pylist()[:2] == ["rebalanced_out"] * 2
    assert out.column("reason").to_pylist()[4] == "network"
    assert "quota" in out.column("detail")[0].as_py()
    assert result.counts_after.tolist() == [1, 1]
    validate(out)
    assert pc.sum(pc.equal(out.column("status"), "kept")).as_py() == 2


def test_load_target_csv_counts_weights_and_names(tmp_path) -> None:
    counts = tmp_path / "counts.csv"
    counts.write_text("label,count\n0,30\n2,10\n")
    assert load_target(counts, num_classes=3).tolist() == [0.75, 0.0, 0.25]
    weights = tmp_path / "weights.csv"
    weights.write_text("label,weight\ncup,1\ndog,3\n")
    assert load_target(weights, num_classes=3, label_names={"cup": 0, "dog": 1}).tolist() == [0.25, 0.75, 0]
    assert load_target("imagenet").shape == (IMAGENET_NUM_CLASSES,)
    bad = tmp_path / "bad.csv"
    bad.write_text("class,count\n0,1\n")
    with pytest.raises(TargetError, match="header"):
        load_target(bad)
    bad.write_text("label,count\nnot_a_class,1\n")
    with pytest.raises(TargetError, match="not_a_class"):
        load_target(bad)
    bad.write_text("label,count\n5,1\n")
    with pytest.raises(TargetError, match="outside"):
        load_target(bad, num_classes=3)
    with pytest.raises(TargetError, match="neither"):
        load_target(tmp_path / "missing.csv")
