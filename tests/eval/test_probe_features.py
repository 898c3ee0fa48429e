"""Feature extraction and its on-disk cache: hits, misses when an input changes, damaged entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vito_eval.datasets import load_dataset
from vito_eval.encoders import load_encoder
from vito_eval.features import cached_features, extract_features, feature_cache_key


@pytest.fixture(scope="module")
def mnist(samples_dir: Path):
    ds = load_dataset(f"mnist-csv:{samples_dir / 'mnist-5k' / 'mnist_5k.csv.gz'}")
    return ds, ds.test.subset(np.arange(0, 1000, 50))  # 20 test images


def test_cache_hit_returns_the_same_features(mnist, tmp_path: Path) -> None:
    ds, split = mnist
    enc = load_encoder("random:resnet18")
    first = cached_features(enc, ds, split, 32, tmp_path, batch_size=8)
    second = cached_features(enc, ds, split, 32, tmp_path, batch_size=8)
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(second.labels, split.labels)
    assert first.features.shape == (20, 512)
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}.npz"]  # no temporary files left
    # batching does not change the features
    np.testing.assert_allclose(extract_features(enc, split, 32, batch_size=20), first.features, atol=1e-5)


def test_key_changes_with_every_input(mnist) -> None:
    ds, split = mnist
    a, b = load_encoder("random:resnet18"), load_encoder("random:resnet18:1")
    base = feature_cache_key(a, ds, split, 32)
    assert base == feature_cache_key(load_encoder("random:resnet18"), ds, split, 32)
    assert base != feature_cache_key(b, ds, split, 32)
    assert base != feature_cache_key(a, ds, split, 48)
    assert base != feature_cache_key(a, ds, ds.test.subset(np.arange(1, 1000, 50)), 32)


def test_damaged_entry_is_recomputed(mnist, tmp_path: Path) -> None:
    ds, split = mnist
    enc = load_encoder("random:resnet18")
    first = cached_features(enc, ds, split, 32, tmp_path)
    (tmp_path / f"{first.key}.npz").write_bytes(b"truncated")
    again = cached_features(enc, ds, split, 32, tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.features, first.features)
    assert cached_features(enc, ds, split, 32, tmp_path).from_cache
