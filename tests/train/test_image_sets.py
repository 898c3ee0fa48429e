"""Image sets the trainer reads (idx and ImageFolder), the small kNN, and the online kNN monitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vito_train.data.image_sets import ImageDecodeError, ImageSetError, load_image_set
from vito_train.knn import exact_neighbours, knn_top1
from vito_train.model.backbone import ResNetTrunk
from vito_train.monitor import KnnMonitor


@pytest.fixture(scope="module")
def fashion_dir(samples_dir: Path) -> Path:
    path = samples_dir / "fashion-mnist"
    if not (path / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST missing under {path}: run `videonet-curate samples fetch`")
    return path


def make_folder(root: Path, classes: dict[str, int], size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            pixels[..., c % 3] = 255  # a class-coloured channel
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_fashion_mnist_train_and_test_splits(fashion_dir: Path) -> None:
    train = load_image_set(f"fashion-mnist:{fashion_dir}", "train")
    test = load_image_set(f"fashion-mnist:{fashion_dir}", "test")
    assert (len(train), len(test)) == (60000, 10000)
    image = train.image(0)
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[2])  # grayscale repeated over the channels
    assert train.class_names[9] == "Ankle boot"


def test_image_folder_layouts_and_errors(tmp_path: Path) -> None:
    flat = make_folder(tmp_path / "flat", {"cat": 2, "dog": 3})
    images = load_image_set(f"imagefolder:{flat}")
    assert len(images) == 5 and images.class_names == ("cat", "dog")
    assert images.image(4).shape == (3, 20, 24)
    with pytest.raises(ImageSetError, match="test split"):
        load_image_set(f"imagefolder:{flat}", "test")

    split = tmp_path / "split"
    make_folder(split / "train", {"a": 2, "b": 2})
    make_folder(split / "val", {"a": 1, "b": 1})
    assert len(load_image_set(f"imagefolder:{split}", "test")) == 2

    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ImageSetError, match="no images"):
        load_image_set(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(ImageSetError, match="not a directory"):
        load_image_set(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(ImageSetError, match="known kinds"):
        load_image_set(f"cifar:{flat}")
    with pytest.raises(ImageSetError, match="train-images-idx3-ubyte"):
        load_image_set(f"mnist:{flat}")

    (flat / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    broken = load_image_set(f"imagefolder:{flat}")
    bad = [i for i, p in enumerate(broken.paths) if p.name == "broken.jpg"]
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        broken.image(bad[0])


def test_exact_knn_matches_a_brute_force_vote() -> None:
    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(200, 16)), rng.normal(size=(30, 16))
    sims, idx = exact_neighbours(bank, query, 5)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    np.testing.assert_array_equal(idx, np.argsort(-(qn @ bn.T), axis=1)[:, :5])
    assert np.all(np.diff(sims, axis=1) <= 0)
    labels = rng.integers(0, 3, 200)
    # queries that are bank points find themselves first: k=1 top-1 is exact
    assert knn_top1(bank, labels, bank[:50], labels[:50], 3, k=1) == 1.0


def test_eval_knn_reuses_the_train_vote() -> None:
    from vito_eval.knn import knn_scores

    rng = np.random.default_rng(1)
    bank, query, labels = rng.normal(size=(300, 8)), rng.normal(size=(40, 8)), rng.integers(0, 4, 300)
    expected = knn_scores(bank, labels, query, 4, 20).argmax(1)
    query_labels = expected.copy()
    assert knn_top1(bank, labels, query, query_labels, 4, 20) == 1.0


def test_monitor_separates_classes_and_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "set"
    make_folder(root / "train", {"r": 12, "g": 12, "b": 12})
    make_folder(root / "val", {"r": 4, "g": 4, "b": 4})
    monitor = KnnMonitor.load(f"imagefolder:{root}", image_size=32, bank_size=30, query_size=12)
    assert monitor.bank.shape == (30, 3, 32, 32) and monitor.queries.shape == (12, 3, 32, 32)
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18").train()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    row = monitor.measure(trunk, torch.device("cpu"))
    assert trunk.training
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())  # BN stats untouched
    # the class colour is in the pixels: even a random trunk's kNN is far above chance (33%)
    assert row["knn20_top1"] >= 80 and row["monitor_s"] > 0
    assert monitor.measurements == 1
