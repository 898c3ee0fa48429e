"""faiss kNN with DINO's temperature-weighted votes against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np

from vito_eval.knn import knn_scores, nearest_neighbours, weighted_votes


def _reference_scores(train, labels, query, classes, k, temperature):
    train_n = train / np.linalg.norm(train, axis=1, keepdims=True)
    query_n = query / np.linalg.norm(query, axis=1, keepdims=True)
    sims = query_n @ train_n.T
    scores = np.zeros((len(query), classes))
    for q in range(len(query)):
        top = np.argsort(-sims[q])[:k]
        for j in top:
            scores[q, labels[j]] += np.exp(sims[q, j] / temperature)
    return scores


def test_weighted_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(300, 16)), rng.normal(size=(50, 16))
    labels = rng.integers(0, 7, 300)
    ours = knn_scores(train, labels, query, 7, k=20, temperature=0.07)
    ref = _reference_scores(train, labels, query, 7, 20, 0.07)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    assert (ours.argmax(1) == ref.argmax(1)).all()


def test_one_nn_is_the_nearest_label() -> None:
    rng = np.random.default_rng(1)
    train, query = rng.normal(size=(100, 8)), rng.normal(size=(30, 8))
    labels = rng.integers(0, 4, 100)
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)
    ).T
    assert (knn_scores(train, labels, query, 4, k=1).argmax(1) == labels[cos.argmax(1)]).all()


def test_votes_weight_close_neighbours_more() -> None:
    # one very close neighbour of class 1 outvotes two farther ones of class 0 at T=0.07
    scores = weighted_votes(np.array([[0.99, 0.80, 0.80]]), np.array([[1, 0, 0]]), 2, temperature=0.07)
    assert scores.argmax() == 1
    np.testing.assert_allclose(scores[0], [2 * np.exp(0.8 / 0.07), np.exp(0.99 / 0.07)])


def test_k_larger_than_train_set_uses_all() -> None:
    sims, idx = nearest_neighbours(np.eye(3), np.ones((1, 3)), k=20)
    assert idx.shape == (1, 3) and sorted(idx[0].tolist()) == [0, 1, 2]


class _FakeGpuFaiss:
    """Stands in for a faiss GPU build on this CPU-only machine: ``knn_gpu`` records its calls and
    answers with faiss's exact CPU search, so only the branch selection is under test."""

    def __init__(self, monkeypatch, num_gpus: int) -> None:
        import faiss

        import vito_eval.knn as knn

        self.calls = 0

        def knn_gpu(res, xq, xb, k, metric):
            assert isinstance(res, self.Resources) and metric == faiss.METRIC_INNER_PRODUCT
            self.calls += 1
            return faiss.knn(xq, xb, k, metric=metric)

        class Resources:
            pass

        self.Resources = Resources
        monkeypatch.setattr(faiss, "StandardGpuResources", Resources, raising=False)
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: num_gpus)
        monkeypatch.setattr(faiss, "knn_gpu", knn_gpu, raising=False)
        knn.gpu_resources.cache_clear()


def test_gpu_branch_is_chosen_only_when_faiss_sees_a_gpu(monkeypatch, caplog) -> None:
    import vito_eval.knn as knn

    rng = np.random.default_rng(1)
    train, query = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    cpu = nearest_neighbours(train, query, 5)
    assert knn.gpu_resources() is None  # faiss-cpu here: no StandardGpuResources
    try:
        fake = _FakeGpuFaiss(monkeypatch, num_gpus=1)
        gpu = nearest_neighbours(train, query, 5)
        assert fake.calls == 1
        np.testing.assert_array_equal(gpu[1], cpu[1])
        nearest_neighbours(train, query, 5, use_gpu=False)
        assert fake.calls == 1  # use_gpu=False stays on the CPU
        monkeypatch.setattr("faiss.get_num_gpus", lambda: 0)  # a GPU build on a machine without a GPU
        knn.gpu_resources.cache_clear()
        nearest_neighbours(train, query, 5, use_gpu=True)
        assert fake.calls == 1 and "faiss sees no GPU" in caplog.text
    finally:
        monkeypatch.undo()
        knn.gpu_resources.cache_clear()
    assert knn.gpu_resources() is None
