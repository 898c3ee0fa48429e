"""The on-disk prototype cache and the offline lookup of cached open_clip weights."""

from __future__ import annotations

import pytest
import torch

from videonet_curate.models import prototype_cache
from videonet_curate.models.openclip import cached_pretrained_file

IDENTITY = {"model_id": "openclip:ViT-B-32:laion2b_s34b_b79k", "prototype_set": "simple-7-templates"}


class CountingBuilder:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor, self.calls = tensor, 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.tensor


def test_built_once_then_read_back(tmp_path):
    build = CountingBuilder(torch.randn(3, 8))
    first, path = prototype_cache.load_or_build(IDENTITY, build, cache_dir=tmp_path, expected_shape=(3, 8))
    second, again = prototype_cache.load_or_build(IDENTITY, build, cache_dir=tmp_path, expected_shape=(3, 8))
    assert build.calls == 1 and path == again and path.parent == tmp_path
    assert torch.equal(first, second)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_key_changes_with_every_part_of_the_identity(tmp_path):
    base = prototype_cache.cache_path(tmp_path, IDENTITY)
    for change in (
        {"prototype_set": "openai-80-templates"},
        {"model_id": "openclip:ViT-B-32:openai"},
        {"class_indices": [1, 2]},
    ):
        assert prototype_cache.cache_path(tmp_path, {**IDENTITY, **change}) != base
    assert prototype_cache.cache_path(tmp_path, dict(reversed(IDENTITY.items()))) == base


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape"])
def test_damaged_entry_is_rebuilt(tmp_path, damage):
    build = CountingBuilder(torch.randn(3, 8))
    _, path = prototype_cache.load_or_build(IDENTITY, build, cache_dir=tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:20])
        expected_shape = (3, 8)
    else:
        expected_shape = (4, 8)
        build.tensor = torch.randn(4, 8)
    tensor, _ = prototype_cache.load_or_build(
        IDENTITY, build, cache_dir=tmp_path, expected_shape=expected_shape
    )
    assert build.calls == 2 and tuple(tensor.shape) == expected_shape


def test_cached_hub_weights_are_found_without_network(tmp_path):
    # the Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/FILE}
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert cached_pretrained_file("ViT-B-32", "laion2b_s34b_b79k", weights_cache_dir=str(tmp_path)) is None
    weights = snapshot / "open_clip_model.safetensors"
    weights.write_bytes(b"weights")
    found = cached_pretrained_file("ViT-B-32", "laion2b_s34b_b79k", weights_cache_dir=str(tmp_path))
    assert found is not None and found.endswith("open_clip_model.safetensors")
