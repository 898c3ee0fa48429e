"""The torch L-BFGS probe (vito_eval.linear_probe) against scikit-learn's LogisticRegression on the same
features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from vito_eval.linear_probe import (
    Standardizer,
    fit_linear_probe,
    fit_logistic_regression,
    stratified_validation_split,
)


def _blobs(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + spread * rng.normal(size=(n, dim)), y


@pytest.mark.parametrize("l2", [1e-1, 1e-2, 1e-3])
def test_matches_sklearn_multinomial_logistic_regression(l2: float) -> None:
    x, y = _blobs(300, 20, 5, spread=2.0, seed=1)  # overlapping classes: a unique, well-posed optimum
    x = Standardizer.fit(x).transform(x)
    weight, bias = fit_logistic_regression(x, y, 5, l2, max_iter=2000, tol=1e-10)
    ref = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-12, max_iter=20000).fit(x, y)
    np.testing.assert_allclose(weight, ref.coef_, atol=2e-4, rtol=1e-3)
    ours = np.exp(x @ weight.T + bias)
    ours /= ours.sum(1, keepdims=True)
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-5)


def test_probe_is_deterministic_and_picks_l2_on_validation() -> None:
    x, y = _blobs(400, 32, 4, spread=3.0, seed=2)
    first = fit_linear_probe(x, y, 4, l2_grid=(1e-3, 1e-2, 1e-1, 1.0))
    second = fit_linear_probe(x, y, 4, l2_grid=(1e-3, 1e-2, 1e-1, 1.0))
    np.testing.assert_array_equal(first.weight, second.weight)
    assert set(first.validation_accuracy) == {1e-3, 1e-2, 1e-1, 1.0}
    assert first.validation_accuracy[first.l2] == max(first.validation_accuracy.values())
    xt, yt = _blobs(400, 32, 4, spread=3.0, seed=2)
    assert (first.predict(xt) == yt).mean() > 0.8


def test_strong_l2_loses_to_the_selected_one_on_noisy_features() -> None:
    """A grid with a crippling strength: validation must not choose it."""
    x, y = _blobs(300, 10, 3, spread=1.0, seed=3)
    probe = fit_linear_probe(x, y, 3, l2_grid=(1e3, 1e-2))
    assert probe.l2 == 1e-2
    assert probe.validation_accuracy[1e3] <= probe.validation_accuracy[1e-2]


def test_validation_split_is_stratified_and_disjoint() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 1)
    train, val = stratified_validation_split(labels, 0.2, seed=0)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val], minlength=3).tolist() == [10, 2, 0]
