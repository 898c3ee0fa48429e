"""Near-duplicate grouping on constructed embeddings: exact and bucketed paths, keepers, table update."""

from __future__ import annotations

import numpy as np
import pytest
from manifest_rows import manifest_row

from videonet_curate.dedup import DedupInputError, apply_dedup, clip_embedding, find_duplicates
from videonet_curate.embeddings import embeddings_table
from videonet_curate.manifest import rows_to_table, validate


def planted(
    n: int = 3000, dim: int = 48, groups: int = 12, size: int = 6, noise: float = 0.02, seed: int = 0
):
    """Random clips plus ``groups`` groups of ``size`` noisy copies of the first ``groups`` clips."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    members = {}
    for g in range(groups):
        rows = np.arange(groups + g * (size - 1), groups + (g + 1) * (size - 1))
        x[rows] = x[g] + noise * rng.standard_normal((len(rows), dim))
        members[g] = np.concatenate([[g], rows])
    return x, members, rng.random(n)


def test_clip_embedding_is_normalised_frame_mean() -> None:
    frames = np.array([[[3.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]])  # 2 clips x 2 frames x 2-d
    assert np.allclose(clip_embedding(frames), [[1.0, 0.0], [0.0, 1.0]])


def test_exact_path_finds_planted_groups_and_keeps_highest_score() -> None:
    x, members, scores = planted()
    result = find_duplicates(x, scores, 0.95)
    assert result.exact
    assert result.groups == len(members)
    assert result.num_duplicates == sum(len(m) - 1 for m in members.values())
    for rows in members.values():
        keeper = rows[np.argmax(scores[rows])]
        assert result.dup_of[keeper] == -1
        assert set(result.dup_of[rows[rows != keeper]]) == {keeper}
    assert (result.nearest_sim[members[0]] > 0.95).all()
    # random 48-d vectors are far apart
    assert np.nanmax(result.nearest_sim[len(members) * 6 :]) < 0.8


def test_bucketed_path_agrees_with_exact() -> None:
    x, members, scores = planted()
    exact = find_duplicates(x, scores, 0.95)
    approx = find_duplicates(x, scores, 0.95, exact_max=100, bucket_size=150, nprobe=3)
    assert not approx.exact
    assert np.array_equal(exact.dup_of, approx.dup_of)
    grouped = exact.dup_of >= 0
    assert np.allclose(exact.nearest_sim[grouped], approx.nearest_sim[grouped], atol=1e-5)


def test_groups_larger_than_k_use_range_search() -> None:
    x, members, scores = planted(n=500, groups=2, size=40)  # 40 members > k=16 neighbours
    result = find_duplicates(x, scores, 0.95, k=4)
    assert result.groups == 2
    assert result.num_duplicates == 78


def test_chain_is_one_group_and_ties_go_to_lower_index() -> None:
    angles = np.array([0.0, 0.25, 0.5, 2.0])  # neighbours at cos 0.969, the ends at cos 0.878
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    result = find_duplicates(x, np.array([0.5, 0.5, 0.5, 0.9]), 0.95)
    assert result.dup_of.tolist() == [-1, 0, 0, -1]
    assert result.groups == 1


def test_nan_score_never_kept_and_bad_input_rejected() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.001]])
    assert find_duplicates(x, np.array([np.nan, 0.1]), 0.9).dup_of.tolist() == [1, -1]
    with pytest.raises(DedupInputError, match="N == len"):
        find_duplicates(x, np.zeros(3), 0.9)
    with pytest.raises(DedupInputError, match="NaN"):
        find_duplicates(np.array([[np.nan, 0.0], [1.0, 0.0]]), np.zeros(2), 0.9)


def test_apply_dedup_marks_only_kept_rows() -> None:
    statuses = ["kept", "kept", "kept", "failed", "kept"]
    rows = [
        manifest_row(i, source_id=f"v{i}", status=s, label=1, label_name="goldfish", score=score)
        for i, (s, score) in enumerate(zip(statuses, [0.2, 0.9, 0.5, 0.99, 0.3], strict=True))
    ]
    table = rows_to_table(rows)
    e = np.eye(4, dtype=np.float32)
    embeddings = {"c0": e[0], "c1": e[0] + 0.2 * e[1], "c2": e[2], "c3": e[0], "c4": e[3]}
    out = apply_dedup(table, embeddings, 0.95)
    assert out.column("status").to_pylist() == ["duplicate", "kept", "kept", "failed", "kept"]
    assert out.column("dup_of").to_pylist() == ["c1", None, None, None, None]
    assert out.column("reason").to_pylist()[0] == "duplicate"
    assert "0.9806" in out.column("detail")[0].as_py() and "c1" in out.column("detail")[0].as_py()
    validate(out)
    # the same from an Arrow embeddings table, with c4's embedding absent (left alone)
    present = ["c0", "c1", "c2", "c3"]
    arrow = embeddings_table(present, np.stack([embeddings[k] for k in present]))
    assert apply_dedup(table, arrow, 0.95).column("status").to_pylist() == out.column("status").to_pylist()


def test_folding_edges_keeps_the_same_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny edge budget the edges are folded into stars often; the groups must not change."""
    import videonet_curate.dedup as dedup

    x, _, scores = planted(n=800, groups=5, size=30)
    expected = find_duplicates(x, scores, 0.95)
    monkeypatch.setattr(dedup, "_EDGE_FOLD_LIMIT", 10)
    monkeypatch.setattr(dedup, "_QUERY_BATCH", 64)
    folded = find_duplicates(x, scores, 0.95)
    assert np.array_equal(expected.dup_of, folded.dup_of) and folded.groups == 5


def test_gpu_branch_is_chosen_only_when_faiss_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss-cpu here: a stand-in GPU build (``knn_gpu`` answering with the CPU search) checks the choice."""
    import faiss

    x = planted(n=400)[0]
    scores = np.arange(400, dtype=np.float64)
    cpu = find_duplicates(x, scores, 0.9)
    assert (cpu.dup_of >= 0).any()
    calls = []

    def knn_gpu(res, xq, xb, k, metric):
        calls.append(k)
        return faiss.knn(xq, xb, k, metric=metric)

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "knn_gpu", knn_gpu, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # a GPU build on a machine without a GPU
    find_duplicates(x, scores, 0.9)
    assert not calls
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    gpu = find_duplicates(x, scores, 0.9)
    assert calls and np.array_equal(gpu.dup_of, cpu.dup_of)
    calls.clear()
    find_duplicates(x, scores, 0.9, use_gpu=False)
    assert not calls
