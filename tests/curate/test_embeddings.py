"""embeddings.py: the embeddings file layout, written and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from videonet_curate.embeddings import (
    EmbeddingsError,
    embedding_matrix,
    embeddings_table,
    empty_embeddings,
    read_embeddings,
    write_embeddings,
)


def test_embedding_matrix_reads_fixed_and_variable_lists() -> None:
    table = embeddings_table(["a", "b"], np.arange(6).reshape(2, 3))
    assert pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    assert embedding_matrix(table).tolist() == [[0, 1, 2], [3, 4, 5]]
    ragged = pa.table(
        {"clip_id": ["a", "b"], "embedding": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))}
    )
    with pytest.raises(EmbeddingsError, match="different lengths"):
        embedding_matrix(ragged)


def test_embeddings_file_round_trips_and_rejects_nulls(tmp_path: Path) -> None:
    path = write_embeddings(embeddings_table(["a", "b"], np.eye(2)), tmp_path / "embeddings.parquet")
    table = read_embeddings(path)
    assert table.column("clip_id").to_pylist() == ["a", "b"]
    assert embedding_matrix(table).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert embedding_matrix(empty_embeddings()).shape == (0, 0)
    nulls = pa.table({"clip_id": ["a"], "embedding": pa.array([None], pa.list_(pa.float32()))})
    with pytest.raises(EmbeddingsError, match="null embedding"):
        embedding_matrix(nulls)
