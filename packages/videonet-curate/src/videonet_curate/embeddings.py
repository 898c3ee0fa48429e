"""The embeddings file (``embeddings.parquet``): one L2-normalised embedding per labelled clip.

Layout: ``clip_id`` string, ``embedding`` fixed_size_list<float32>[D] (the build's shards may hold
``list<float32>`` rows of one length; readers accept both). The one home of its name, schema, writer
and readers; de-duplication, the report and publishing read it through here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videonet_curate.manifest import atomic_write_table
from videonet_curate.uri import arrow_location

EMBEDDINGS_FILENAME = "embeddings.parquet"


class EmbeddingsError(ValueError):
    """An embeddings table that does not have the layout (null, ragged or mistyped embeddings)."""


def empty_embeddings() -> pa.Table:
    """An embeddings table without rows (a build with no labelled clip)."""
    return pa.schema([("clip_id", pa.string()), ("embedding", pa.list_(pa.float32()))]).empty_table()


def embeddings_table(clip_ids: list[str] | np.ndarray, matrix: np.ndarray) -> pa.Table:
    """The ``embeddings.parquet`` layout: ``clip_id`` string, ``embedding`` fixed_size_list<float32>[D]."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    return pa.table({"clip_id": pa.array(clip_ids, pa.string()), "embedding": values})


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as an (N, D) float32 array, without a loop over rows.

    Accepts ``fixed_size_list<float32>[D]`` (the published layout) and ``list<float32>`` whose rows all
    have the same length (what the build's shards write).
    """
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise EmbeddingsError(f"{column.null_count} clips have a null embedding; re-embed them")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = np.diff(column.offsets.to_numpy())
        if len(lengths) and (lengths != lengths[0]).any():
            raise EmbeddingsError(
                f"embeddings have different lengths ({lengths.min()}..{lengths.max()}): mixed models?"
            )
        dim = int(lengths[0]) if len(lengths) else 0
    else:
        raise EmbeddingsError(
            f"embedding column has type {column.type}; expected a list of float32 "
            "(write it with videonet_curate.embeddings.embeddings_table)"
        )
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), dim) if dim else np.empty((len(column), 0), np.float32)


def read_embeddings(path: str | os.PathLike[str]) -> pa.Table:
    """Read ``embeddings.parquet`` (only its two columns), checking the layout."""
    where, filesystem = arrow_location(path)
    table = pq.read_table(where, columns=["clip_id", "embedding"], filesystem=filesystem)
    embedding_matrix(table.slice(0, 0))  # type check without copying
    return table


def write_embeddings(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write an embeddings table atomically (temporary name, fsync, rename)."""
    return atomic_write_table(table, path)
