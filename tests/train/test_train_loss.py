import math

import pytest
import torch

from vito_train.loss import info_nce, symmetric_multiscale_loss


def test_info_nce_matches_hand_computed_value():
    # orthonormal queries/keys: positives have cosine 1, negatives 0
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    k = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0)))
    assert info_nce(q, k, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_positive_offset_picks_the_gathered_keys_of_this_rank():
    torch.manual_seed(0)
    q = torch.randn(3, 5)
    other = torch.randn(3, 5)
    keys_rank0, keys_rank1 = other, q.clone()  # this rank is rank 1: its positives sit at 3..5
    gathered = torch.cat([keys_rank0, keys_rank1])
    logits = (
        torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(gathered, dim=1).t() / 0.1
    )
    manual = torch.nn.functional.cross_entropy(logits, torch.arange(3) + 3)
    assert info_nce(q, gathered, 0.1, positive_offset=3).item() == pytest.approx(manual.item(), rel=1e-6)
    assert info_nce(q, gathered, 0.1, positive_offset=3) < info_nce(q, gathered, 0.1, positive_offset=0)


def test_symmetric_loss_sums_both_directions_over_scales():
    torch.manual_seed(1)
    p1, p2, z1, z2 = ([torch.randn(4, 8), torch.randn(4, 8)] for _ in range(4))
    total = symmetric_multiscale_loss(p1, p2, z1, z2, 0.2)
    manual = sum(info_nce(p1[s], z2[s], 0.2) + info_nce(p2[s], z1[s], 0.2) for s in range(2))
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)


def test_chance_level_is_log_n_per_term():
    # all keys identical: every query sees N equal logits
    q = torch.randn(6, 4)
    k = torch.ones(6, 4)
    assert info_nce(q, k, 0.1).item() == pytest.approx(math.log(6), rel=1e-5)
