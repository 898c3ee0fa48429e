import math

import torch

from vito_train.model.pooling import AttentionPool, StagePooling, attention_pool


def test_attention_pool_matches_hand_computed_softmax_weights():
    # one image, 2 channels, 1x2 positions; logits 0 and ln 3 -> weights 1/4 and 3/4
    features = torch.tensor([[[[1.0, 5.0]], [[2.0, -2.0]]]])
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])
    pooled = attention_pool(features, logits)
    assert torch.allclose(pooled, torch.tensor([[1 * 0.25 + 5 * 0.75, 2 * 0.25 - 2 * 0.75]]))


def test_equal_logits_give_global_average():
    features = torch.randn(3, 4, 5, 6)
    pooled = attention_pool(features, torch.zeros(3, 1, 5, 6))
    assert torch.allclose(pooled, features.mean(dim=(2, 3)), atol=1e-6)


def test_attention_pool_module_is_a_convex_combination_of_positions():
    torch.manual_seed(0)
    pool = AttentionPool(8, 4)
    features = torch.rand(2, 8, 3, 3)
    pooled = pool(features)
    flat = features.flatten(2)
    assert pooled.shape == (2, 8)
    assert torch.all(pooled <= flat.max(-1).values + 1e-6) and torch.all(pooled >= flat.min(-1).values - 1e-6)


def test_stage_pooling_gives_one_vector_per_scale():
    stages = (torch.randn(2, 256, 6, 6), torch.randn(2, 512, 3, 3))
    assert [v.shape for v in StagePooling("gap", (256, 512))(stages)] == [(2, 512)]
    assert [v.shape for v in StagePooling("attention", (256, 512), 16)(stages)] == [(2, 512)]
    assert [v.shape for v in StagePooling("multiscale", (256, 512), 16)(stages)] == [(2, 256), (2, 512)]
