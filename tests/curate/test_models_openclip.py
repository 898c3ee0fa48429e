"""open_clip scorers: text prototypes, their cache, checkpoints and offline failure (random-init ViT-S-32)."""

from __future__ import annotations

import json
import time

import numpy as np
import open_clip
import pytest
import torch

from videonet_curate.classify import score_clip
from videonet_curate.imagenet import IMAGENET_CLASSNAMES
from videonet_curate.models import UnknownModelError, load_scorer
from videonet_curate.models.base import ModelError
from videonet_curate.models.openclip import (
    PretrainedWeightsUnavailableError,
    cached_pretrained_file,
    hub_reachable,
    load_openclip_scorer,
    parse_openclip_spec,
)

# A tiny CLIP (2-layer towers, width 64) registered with open_clip like any shipped config: the code
# under test is the same as for ViT-B-32, at a hundredth of the compute. Random init, no download.
ARCH = "videonet-tiny-test-clip"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SPEC = f"openclip:{ARCH}"
SUBSET = [89, 258, 657, 744, 836, 837]

pytestmark = pytest.mark.filterwarnings("ignore:openclip.*random initialisation:UserWarning")


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config(tmp_path_factory):
    config = tmp_path_factory.mktemp("open_clip_configs") / f"{ARCH}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    assert ARCH in open_clip.list_models()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("prototypes")


@pytest.fixture(scope="module")
def scorer(cache_dir, tiny_clip_config):
    return load_scorer(SPEC, templates="simple", cache_dir=cache_dir, class_indices=SUBSET)


def test_identity_and_preprocessing(scorer):
    assert scorer.model_id == f"openclip:{ARCH}:random-init-seed0"
    assert scorer.prototype_set == "simple-7-templates"
    assert scorer.embedding_dim == 64 and tuple(scorer.prototypes.shape) == (len(SUBSET), 64)
    assert scorer.preprocess_spec.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert scorer.preprocess_spec.size == 224 and scorer.preprocess_spec.crop_pct == 1.0


def test_text_prototypes_equal_open_clips_zero_shot_classifier(scorer):
    tokenizer = open_clip.get_tokenizer(ARCH)
    names = [IMAGENET_CLASSNAMES[i] for i in SUBSET]
    expected = open_clip.build_zero_shot_classifier(
        scorer.model, tokenizer, names, open_clip.SIMPLE_IMAGENET_TEMPLATES
    ).T
    torch.testing.assert_close(scorer.prototypes, expected, rtol=0, atol=1e-6)
    # and the one-class-at-a-time reference implementation agrees
    legacy = open_clip.build_zero_shot_classifier_legacy(
        scorer.model, tokenizer, names, open_clip.SIMPLE_IMAGENET_TEMPLATES
    ).T
    torch.testing.assert_close(scorer.prototypes, legacy, rtol=0, atol=1e-5)
    torch.testing.assert_close(scorer.prototypes.norm(dim=1), torch.ones(len(SUBSET)))


def test_openai_templates_build_the_80_prompt_prototypes(cache_dir):
    subset = [1, 2, 3]
    scorer = load_scorer(SPEC, templates="openai", cache_dir=cache_dir, class_indices=subset)
    assert scorer.prototype_set == "openai-80-templates"
    expected = open_clip.build_zero_shot_classifier(
        scorer.model,
        open_clip.get_tokenizer(ARCH),
        [IMAGENET_CLASSNAMES[i] for i in subset],
        open_clip.OPENAI_IMAGENET_TEMPLATES,
    ).T
    torch.testing.assert_close(scorer.prototypes, expected, rtol=0, atol=1e-6)


def test_scores_are_scaled_cosines_over_imagenet_indices(scorer):
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 120, 160, 3), dtype=np.uint8)
    embeddings = scorer.embed(scorer.preprocess(frames))
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    logits = scorer.class_logits(embeddings)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits[:, SUBSET], scorer.logit_scale * embeddings @ scorer.prototypes.T)
    assert torch.isneginf(logits[:, 0]).all()
    probs = scorer.class_probabilities(embeddings)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))


def test_duplicate_names_have_identical_prototypes_and_fold_into_one_label(scorer):
    rows = {index: row for index, row in zip(SUBSET, scorer.prototypes, strict=True)}
    assert torch.equal(rows[657], rows[744]) and torch.equal(rows[836], rows[837])
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    _, probs = scorer.score_frames(frames)
    np.testing.assert_array_equal(probs[:, 657], probs[:, 744])
    clip = score_clip(probs)
    assert clip.label not in (744, 836)
    assert not {744, 836} & set(clip.top5_labels)


def test_second_load_hits_the_cache(cache_dir, scorer, monkeypatch):
    entries = sorted(cache_dir.glob("*.safetensors"))
    assert entries and not list(cache_dir.glob(".*.tmp"))

    def must_not_run(*args, **kwargs):
        raise AssertionError("prototypes were rebuilt despite a cache entry")

    monkeypatch.setattr(open_clip, "build_zero_shot_classifier", must_not_run)
    again = load_scorer(SPEC, templates="simple", cache_dir=cache_dir, class_indices=SUBSET)
    assert torch.equal(again.prototypes, scorer.prototypes)
    assert sorted(cache_dir.glob("*.safetensors")) == entries
    # another class subset is another entry, so it must be built
    with pytest.raises(AssertionError, match="rebuilt"):
        load_scorer(SPEC, templates="simple", cache_dir=cache_dir, class_indices=[89, 258])


def test_checkpoint_path_spec_loads_those_weights(scorer, tmp_path):
    state = dict(scorer.model.state_dict())
    state["logit_scale"] = torch.tensor(np.log(100.0), dtype=torch.float32)  # as released CLIPs have
    checkpoint = tmp_path / "clip.pt"
    torch.save({"state_dict": state}, checkpoint)
    loaded = load_scorer(f"{SPEC}:{checkpoint}", templates="simple", cache_dir=tmp_path, class_indices=SUBSET)
    assert loaded.model_id.startswith(f"openclip:{ARCH}:sha256-")
    assert loaded.logit_scale == pytest.approx(100.0)
    torch.testing.assert_close(loaded.prototypes, scorer.prototypes)


def test_uncached_pretrained_tag_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cached_pretrained_file("ViT-B-32", "laion2b_s34b_b79k", weights_cache_dir=str(tmp_path)) is None
    started = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"openclip:ViT-B-32:/path/to/checkpoint\.pt"):
        load_openclip_scorer("openclip:ViT-B-32:laion2b_s34b_b79k", weights_cache_dir=str(tmp_path))
    assert time.monotonic() - started < 10


def test_hub_probe_gives_up_quickly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    started = time.monotonic()
    assert hub_reachable("192.0.2.1", 443, timeout_s=0.5) is False  # TEST-NET-1: never routable
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("openclip:NoSuchNet-1", UnknownModelError, "unknown open_clip architecture"),
        ("openclip:ViT-B-32:no_such_tag", UnknownModelError, "laion2b_s34b_b79k"),
        ("openclip:ViT-B-32:/no/such/ckpt.pt", ModelError, "does not exist"),
    ],
)
def test_bad_specs_are_typed_errors(spec, error, message):
    with pytest.raises(error, match=message):
        parse_openclip_spec(spec)


def test_unknown_template_set_is_rejected():
    with pytest.raises(ValueError, match="simple"):
        load_scorer(SPEC, templates="fancy", class_indices=[1])


def test_bf16_embedder_agrees_with_fp32(scorer, cache_dir):
    frames = np.random.default_rng(3).integers(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
    reference = scorer.embed(scorer.preprocess(frames))
    half = load_scorer(SPEC, templates="simple", cache_dir=cache_dir, class_indices=SUBSET, precision="bf16")
    batch = half.preprocess(frames)
    assert batch.dtype == torch.bfloat16
    embeddings = half.embed(batch)
    assert embeddings.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(embeddings, reference).min() > 0.98
