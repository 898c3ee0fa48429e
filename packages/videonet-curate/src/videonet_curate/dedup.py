"""Near-duplicate removal on clip embeddings with faiss.

A clip's embedding is the mean of its frame embeddings, L2-normalised, so the inner product of two clips is
their cosine similarity. Clips i and j are linked when ``cos(e_i, e_j) >= threshold``; the connected
components of that graph are the duplicate groups, and the highest-scoring clip of a group is kept.

Two search paths give the edges:

- exact (N <= ``exact_max``): a flat inner-product index over all clips. Each clip asks for its ``k``
  nearest neighbours; a clip whose k-th neighbour is still above the threshold has more duplicates than k,
  so it is asked again with a range search, which returns every neighbour above the threshold.
- approximate (N > ``exact_max``): faiss k-means splits the clips into buckets of about ``bucket_size``;
  each clip lives in its nearest bucket and is searched against its ``nprobe`` nearest buckets (the IVF
  idea). A pair whose clips fall into buckets neither probes is missed; near-duplicates sit close
  together, so that is rare (the benchmark measures the recall). Inside a bucket the similarities are one
  dense matrix product: on CPU numpy's, because for these all-pairs blocks the faiss-cpu wheel's flat
  search (and its IVF list scanning) measured 4-5x more CPU time than numpy's BLAS product here
  (benchmarks/rebalance_dedup.py); on GPU faiss's k-NN + range search as in the exact path.

The faiss GPU build (k-means, k-NN) is used when it is installed and sees a GPU. Not done: Ray. Buckets
are independent, so they could be Ray tasks over a cluster; on one machine BLAS already uses every core,
and 1M clips fit in memory (4 GiB for 512-d: the embeddings plus one normalised copy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from videonet_curate.embeddings import embedding_matrix
from videonet_curate.manifest import STATUS_DUPLICATE, STATUS_KEPT, mark_rows

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95
# All-pairs flat search costs 2 N^2 D flops; faiss's k-NN here did about 20 GFLOP per CPU-second, so 20k
# clips of 512-d cost ~20 CPU-s exact, while the bucketed path costs ~2 N nprobe bucket_size D (linear in N).
DEFAULT_EXACT_MAX = 20_000
DEFAULT_BUCKET_SIZE = 1_000
DEFAULT_NPROBE = 3
DEFAULT_K = 16
# Edges kept in memory before they are folded into component stars (bounded memory for big groups).
_EDGE_FOLD_LIMIT = 20_000_000
_QUERY_BATCH = 8_192
_BLOCK_ELEMENTS = 16_777_216  # similarity block of 64 MiB float32


class DedupInputError(ValueError):
    """Embeddings or scores that cannot be de-duplicated (wrong shape, NaN, mismatched lengths)."""


@dataclass(frozen=True)
class DedupResult:
    """``dup_of[i]`` is the index of the clip kept in i's group, or -1 when i is kept (or alone).

    ``nearest_sim[i]`` is the cosine similarity of i to its nearest other clip (approximate on the
    bucketed path, NaN when no other clip was searched); ``groups`` counts groups of two or more clips.
    """

    dup_of: np.ndarray
    nearest_sim: np.ndarray
    groups: int
    exact: bool

    @property
    def num_duplicates(self) -> int:
        return int((self.dup_of >= 0).sum())


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero), as a new C-contiguous float32 array."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if out.ndim == 2 and out.size:
        faiss.normalize_L2(out)  # in place, multi-threaded; several times faster than numpy's norm here
    return out


def clip_embedding(frame_embeddings: np.ndarray) -> np.ndarray:
    """The clip embedding: mean over frames (axis -2) of the frame embeddings, L2-normalised."""
    mean = np.asarray(frame_embeddings, dtype=np.float32).mean(axis=-2)
    return l2_normalize(mean.reshape(-1, mean.shape[-1])).reshape(mean.shape)


def _gpu_resources() -> object | None:
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.StandardGpuResources()
    return None


def _knn(xq: np.ndarray, xb: np.ndarray, k: int, gpu: object | None) -> tuple[np.ndarray, np.ndarray]:
    if gpu is not None:
        return faiss.knn_gpu(gpu, xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def _flat_edges(
    xq: np.ndarray,
    q_ids: np.ndarray,
    xb: np.ndarray,
    b_ids: np.ndarray,
    threshold: float,
    k: int,
    gpu: object | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (query ids, best similarity to another clip, edges as 2 x E global ids) per query batch."""
    k = min(k, len(xb))
    index: faiss.Index | None = None
    for start in range(0, len(xq), _QUERY_BATCH):
        q = xq[start : start + _QUERY_BATCH]
        qid = q_ids[start : start + _QUERY_BATCH]
        sims, idx = _knn(q, xb, k, gpu)
        valid = idx >= 0
        neighbour = b_ids[np.where(valid, idx, 0)]
        other = valid & (neighbour != qid[:, None])
        sims_other = np.where(other, sims, -np.inf)
        best = sims_other.max(axis=1)
        # Rows whose k-th neighbour still passes may have more duplicates than k: range search them.
        saturated = valid[:, -1] & (sims[:, -1] >= threshold) if k < len(xb) else np.zeros(len(q), bool)
        hit = other & (sims_other >= threshold) & ~saturated[:, None]
        rows, cols = np.nonzero(hit)
        src, dst = [qid[rows]], [neighbour[rows, cols]]
        if saturated.any():
            if index is None:
                index = faiss.IndexFlatIP(xb.shape[1])
                index.add(xb)
            lims, _, ridx = index.range_search(np.ascontiguousarray(q[saturated]), threshold)
            counts = np.diff(lims).astype(np.int64)
            range_src, range_dst = np.repeat(qid[saturated], counts), b_ids[ridx]
            not_self = range_src != range_dst
            src.append(range_src[not_self])
            dst.append(range_dst[not_self])
        yield qid, best, np.stack([np.concatenate(src), np.concatenate(dst)])


def _fold_edges(edges: np.ndarray, n: int) -> np.ndarray:
    """Replace an edge list by stars (member -> smallest member) with the same connected components."""
    labels = _components(edges, n)
    order = np.argsort(labels, kind="stable")
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    root_of_label = order[first]  # smallest index per label, since order is stable
    root = root_of_label[labels]
    members = np.nonzero(root != np.arange(n))[0]
    return np.stack([members, root[members]])


def _components(edges: np.ndarray, n: int) -> np.ndarray:
    # bool weights: repeated edges sum to True, never overflow to zero
    graph = coo_matrix((np.ones(edges.shape[1], bool), (edges[0], edges[1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _bucket_plan(x: np.ndarray, bucket_size: int, nprobe: int, seed: int, gpu: object | None):
    """k-means buckets: each clip's nearest ``nprobe`` centroids (column 0 is its home bucket)."""
    n, d = x.shape
    nbuckets = max(1, min(n // max(bucket_size, 1), 65_536))
    # Buckets only need to keep near-duplicates together, not to be optimal clusters: a small sample
    # and few iterations suffice (faiss warns below 39 points per centroid).
    kmeans = faiss.Kmeans(
        d,
        nbuckets,
        niter=8,
        seed=seed,
        spherical=True,
        gpu=gpu is not None,
        max_points_per_centroid=40,
        verbose=False,
    )
    kmeans.train(x)
    nprobe = min(nprobe, nbuckets)
    if gpu is not None:
        return nbuckets, _knn(x, kmeans.centroids, nprobe, gpu)[1]
    assign = np.empty((n, nprobe), np.int64)
    for start in range(0, n, _QUERY_BATCH):
        sims = x[start : start + _QUERY_BATCH] @ kmeans.centroids.T
        top = (
            np.argpartition(-sims, nprobe - 1, axis=1)[:, :nprobe]
            if nprobe < nbuckets
            else (np.broadcast_to(np.arange(nbuckets), sims.shape).copy())
        )
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        assign[start : start + _QUERY_BATCH] = np.take_along_axis(top, order, axis=1)
    return nbuckets, assign


def _matmul_edges(
    xq: np.ndarray, q_ids: np.ndarray, xb: np.ndarray, b_ids: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """As :func:`_flat_edges`, from dense similarity blocks; ``b_ids`` must be sorted ascending."""
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(len(xb), 1))
    for start in range(0, len(xq), rows_per_block):
        qid = q_ids[start : start + rows_per_block]
        sims = xq[start : start + rows_per_block] @ xb.T
        self_col = np.minimum(np.searchsorted(b_ids, qid), len(b_ids) - 1)
        is_self = b_ids[self_col] == qid
        sims[np.nonzero(is_self)[0], self_col[is_self]] = -np.inf
        best = sims.max(axis=1)
        hit_rows = np.nonzero(best >= threshold)[0]  # few rows have a duplicate: scan only those
        rows, cols = np.nonzero(sims[hit_rows] >= threshold)
        yield qid, best, np.stack([qid[hit_rows[rows]], b_ids[cols]])


def _segments(keys: np.ndarray, nkeys: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(nkeys + 1))
    return order, bounds


def _search_all(
    x: np.ndarray,
    threshold: float,
    *,
    exact: bool,
    k: int,
    bucket_size: int,
    nprobe: int,
    seed: int,
    gpu: object | None,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    nearest = np.full(n, -np.inf, np.float32)
    pending: list[np.ndarray] = []
    pending_size = 0
    folded = np.empty((2, 0), np.int64)
    ids = np.arange(n, dtype=np.int64)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        if exact:
            yield x, ids, x, ids
            return
        nbuckets, assign = _bucket_plan(x, bucket_size, nprobe, seed, gpu)
        home_order, home_bounds = _segments(assign[:, 0], nbuckets)
        probe_order, probe_bounds = _segments(assign.ravel(), nbuckets)
        probe_ids = probe_order // assign.shape[1]
        for b in range(nbuckets):
            db_ids = home_order[home_bounds[b] : home_bounds[b + 1]]
            q_ids = probe_ids[probe_bounds[b] : probe_bounds[b + 1]]
            if len(db_ids) and len(q_ids):
                yield x[q_ids], q_ids, x[db_ids], db_ids

    for xq, q_ids, xb, b_ids in blocks():
        searched = (
            _flat_edges(xq, q_ids, xb, b_ids, threshold, k, gpu)
            if exact or gpu is not None
            else _matmul_edges(xq, q_ids, xb, b_ids, threshold)
        )
        for qid, best, edges in searched:
            # a clip is a query at most once per block, so this fancy-indexed update has no repeats
            nearest[qid] = np.maximum(nearest[qid], best)
            pending.append(edges)
            pending_size += edges.shape[1]
            if pending_size > _EDGE_FOLD_LIMIT:
                folded = _fold_edges(np.concatenate([folded, *pending], axis=1), n)
                pending, pending_size = [], 0
    edges = np.concatenate([folded, *pending], axis=1) if pending else folded
    return edges, nearest


def find_duplicates(
    embeddings: np.ndarray,
    scores: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_max: int = DEFAULT_EXACT_MAX,
    nprobe: int = DEFAULT_NPROBE,
    bucket_size: int = DEFAULT_BUCKET_SIZE,
    k: int = DEFAULT_K,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> DedupResult:
    """Group clips whose cosine similarity is at least ``threshold``; keep the best-scoring clip of each.

    ``embeddings`` (N, D) are L2-normalised here; ``scores`` (N,) rank clips within a group (NaN ranks
    last, ties go to the lower index). Components are taken over the similarity graph, so a chain
    a~b~c is one group even when cos(a, c) is below the threshold.
    """
    x = np.asarray(embeddings)
    s = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(s):
        raise DedupInputError(f"embeddings must be (N, D) with N == len(scores); got {x.shape} and {s.shape}")
    if not np.isfinite(x).all():
        raise DedupInputError("embeddings contain NaN or inf: recompute them for the affected clips")
    if not -1.0 <= threshold <= 1.0:
        raise DedupInputError(f"threshold {threshold} is not a cosine similarity in [-1, 1]")
    n = len(x)
    exact = n <= exact_max
    if n < 2:
        return DedupResult(np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), 0, exact)
    x = l2_normalize(x)
    gpu = _gpu_resources() if use_gpu in (None, True) else None
    if use_gpu and gpu is None:
        log.warning("use_gpu requested but faiss sees no GPU; searching on CPU")
    log.info("dedup of %d clips (%s path, threshold %.3f)", n, "exact" if exact else "bucketed", threshold)
    edges, nearest = _search_all(
        x, threshold, exact=exact, k=k, bucket_size=bucket_size, nprobe=nprobe, seed=seed, gpu=gpu
    )
    nearest[~np.isfinite(nearest)] = np.nan
    labels = _components(edges, n)
    # Per component the best clip comes first: highest score, NaN last, then the lowest index.
    rank_score = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((np.arange(n), -rank_score, labels))
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(labels.max() + 1, np.int64)
    keeper_of_label[labels[order][first]] = order[first]
    keeper = keeper_of_label[labels]
    dup_of = np.where(keeper == np.arange(n), -1, keeper)
    sizes = np.bincount(labels)
    return DedupResult(dup_of, nearest, int((sizes > 1).sum()), exact)


def apply_dedup(
    table: pa.Table,
    embeddings_by_clip_id: Mapping[str, np.ndarray] | pa.Table,
    threshold: float = DEFAULT_THRESHOLD,
    **search_options: object,
) -> pa.Table:
    """Mark near-duplicates among the ``kept`` rows of a manifest table.

    ``embeddings_by_clip_id`` is a mapping clip_id -> clip embedding, or an Arrow table with columns
    ``clip_id`` and ``embedding`` (as in ``embeddings.parquet``). Kept rows without an embedding are left
    alone (logged). Duplicates get status/reason ``duplicate``, ``dup_of`` the keeper's clip_id and a
    ``detail`` with the cosine similarity to the keeper.
    """
    ids, matrix = _embedding_lookup(embeddings_by_clip_id)
    kept = pc.fill_null(pc.equal(table.column("status"), STATUS_KEPT), False)
    kept_rows = np.nonzero(kept.to_numpy(zero_copy_only=False))[0]
    # Arrow's hash lookup: no Python object per clip_id, at millions of rows
    pos = pc.fill_null(pc.index_in(table.column("clip_id").take(kept_rows), value_set=ids), -1)
    pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
    if (pos < 0).any():
        log.warning("%d kept clips have no embedding and are not de-duplicated", int((pos < 0).sum()))
    rows, pos = kept_rows[pos >= 0], pos[pos >= 0]
    if len(rows) < 2:
        return table
    scores = pc.fill_null(table.column("score").take(rows), float("nan")).to_numpy(zero_copy_only=False)
    emb = l2_normalize(matrix[pos])
    result = find_duplicates(emb, scores, threshold, **search_options)  # type: ignore[arg-type]
    dup_local = np.nonzero(result.dup_of >= 0)[0]
    if not len(dup_local):
        return table
    keeper_local = result.dup_of[dup_local]
    sims = np.einsum("ij,ij->i", emb[dup_local], emb[keeper_local])
    keeper_ids = table.column("clip_id").take(rows[keeper_local])
    details = pc.binary_join_element_wise(
        "cosine similarity ",
        pc.cast(pc.round(pa.array(sims), 4), pa.string()),
        " to ",
        keeper_ids,
        f" (threshold {threshold:.3f})",
        "",
    )
    # scatter the per-duplicate values into full-length columns: take with null for every other row
    slot = np.full(table.num_rows, -1, np.int64)
    slot[rows[dup_local]] = np.arange(len(dup_local))
    slot_index = pa.array(slot, mask=slot < 0)
    mask = pc.is_valid(slot_index)
    return mark_rows(
        table,
        mask,
        STATUS_DUPLICATE,
        detail=pc.take(details, slot_index),
        dup_of=pc.take(keeper_ids, slot_index),
    )


def _embedding_lookup(source: Mapping[str, np.ndarray] | pa.Table) -> tuple[pa.Array, np.ndarray]:
    if isinstance(source, pa.Table):
        ids = source.column("clip_id").combine_chunks()
        matrix = embedding_matrix(source)
    else:
        ids = pa.array(list(source.keys()), pa.string())
        matrix = (
            np.stack([np.asarray(v, np.float32) for v in source.values()])
            if len(source)
            else (np.empty((0, 0), np.float32))
        )
    if pc.count_distinct(ids).as_py() != len(ids):
        raise DedupInputError("embeddings hold a clip_id more than once")
    return ids, matrix
