"""Probe datasets: the real Fashion-MNIST and MNIST-5k files, image folders, CSVs, and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vito_eval.datasets import load_dataset, stratified_subsample, to_model_input
from vito_eval.datasets.base import every_fifth_split
from vito_eval.datasets.idx import read_idx
from vito_eval.errors import DatasetError, ImageDecodeError


@pytest.fixture(scope="module")
def fashion_dir(samples_dir: Path) -> Path:
    path = samples_dir / "fashion-mnist"
    if not (path / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST missing under {path}: run `videonet-curate samples fetch`")
    return path


def test_fashion_mnist_real_files(fashion_dir: Path) -> None:
    ds = load_dataset(f"fashion-mnist:{fashion_dir}")
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.train.pixels.shape == (60000, 28, 28) and ds.train.pixels.dtype == np.uint8
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.default_image_size == 96


def test_uncompressed_idx_reads_the_same(fashion_dir: Path, tmp_path: Path) -> None:
    src = fashion_dir / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    np.testing.assert_array_equal(read_idx(plain), read_idx(src))
    plain.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # header says 5 items, 3 follow
    with pytest.raises(DatasetError, match="header says"):
        read_idx(plain)


def test_missing_idx_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}")


def test_mnist_csv_split_is_documented_and_stratified(samples_dir: Path) -> None:
    path = samples_dir / "mnist-5k" / "mnist_5k.csv.gz"
    ds = load_dataset(f"mnist-csv:{path}")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert np.bincount(ds.test.labels).tolist() == [100] * 10
    assert ds.train.pixels.shape[1:] == (28, 28) and ds.train.pixels.max() == 255


def test_every_fifth_split() -> None:
    train, test = every_fifth_split(np.array([0, 1] * 10))
    assert test.tolist() == [8, 9, 18, 19]
    assert len(train) == 16


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", colour)
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.class_names == ("cat", "dog") and (len(ds.train), len(ds.test)) == (6, 4)
    x = to_model_input(ds.test.image(3), 32)
    assert x.shape == (3, 32, 32) and x[2].float().mean() > 250  # a blue dog image, centre-cropped


def test_image_folder_empty_class_and_bad_image(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "cat" / "0.png", (1, 2, 3))
    (tmp_path / "train" / "dog").mkdir(parents=True)
    _png(tmp_path / "test" / "cat" / "0.png", (1, 2, 3))
    with pytest.raises(DatasetError, match="dog"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        ds.train.image(int(np.flatnonzero(ds.train.labels == 1)[0]))


def test_csv_dataset_with_and_without_split(tmp_path: Path) -> None:
    for i in range(10):
        _png(tmp_path / "img" / f"{i}.png", (i * 20, 0, 0))
    rows = [f"img/{i}.png,{'even' if i % 2 == 0 else 'odd'}" for i in range(10)]
    (tmp_path / "plain.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    ds = load_dataset(f"csv:{tmp_path / 'plain.csv'}")
    assert ds.class_names == ("even", "odd") and (len(ds.train), len(ds.test)) == (8, 2)
    split_rows = [r + (",test" if i < 2 else ",train") for i, r in enumerate(rows)]
    (tmp_path / "split.csv").write_text("path,label,split\n" + "\n".join(split_rows) + "\n")
    assert len(load_dataset(f"csv:{tmp_path / 'split.csv'}").test) == 2
    (tmp_path / "missing.csv").write_text("path,label\nimg/nope.png,even\n")
    with pytest.raises(DatasetError, match="nope.png"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cifar:/x", "unknown dataset kind 'cifar'"),
        ("fashion-mnist", "KIND:PATH"),
        ("imagefolder:/no/such/dir", "/no/such/dir is not a directory"),
        ("mnist-csv:/no/file.csv", "/no/file.csv"),
    ],
)
def test_bad_dataset_specs(spec: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        load_dataset(spec)


def test_stratified_subsample_keeps_proportions_and_is_seeded() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = stratified_subsample(labels, 40, seed=0)
    assert len(idx) == 40 and np.bincount(labels[idx]).tolist() == [20, 10, 6, 4]
    assert idx.tolist() == stratified_subsample(labels, 40, seed=0).tolist()
    assert idx.tolist() != stratified_subsample(labels, 40, seed=1).tolist()
    assert len(stratified_subsample(labels, None)) == 200
