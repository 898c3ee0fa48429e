import copy

import pytest
import torch
from torch import nn

from vito_train.ema import ema_decay, ema_update_


def test_cosine_schedule_runs_from_base_to_one():
    assert ema_decay(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_decay(50, 100, 0.996) == pytest.approx(0.998)  # 1 - 0.004 * (cos(pi/2) + 1) / 2
    assert ema_decay(100, 100, 0.996) == pytest.approx(1.0)
    assert ema_decay(25, 100, 0.99) == pytest.approx(1 - 0.01 * (2**-0.5 + 1) / 2)


def test_update_moves_target_towards_online_and_copies_buffers():
    online, target = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([1.0, 3.0]))
        target.weight.copy_(torch.tensor([5.0, -1.0]))
        online.running_mean.copy_(torch.tensor([7.0, 8.0]))
    online.num_batches_tracked.fill_(4)
    ema_update_(target, online, 0.75)
    assert torch.allclose(target.weight, torch.tensor([0.75 * 5 + 0.25 * 1, 0.75 * -1 + 0.25 * 3]))
    assert torch.equal(target.running_mean, torch.tensor([7.0, 8.0]))
    assert target.num_batches_tracked.item() == 4


def test_update_rejects_networks_of_another_structure():
    with pytest.raises(ValueError):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.9)


def _reference_ema_update(target: nn.Module, online: nn.Module, decay: float) -> None:
    """The update as first written (multiply, then add; buffers copied one by one)."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(decay).add_(o, alpha=1.0 - decay)
        for t, o in zip(target.buffers(), online.buffers(), strict=True):
            t.copy_(o)


def test_multi_tensor_update_matches_the_plain_formula_over_steps():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(4))
    online(torch.randn(2, 3, 6, 6))
    fast, plain = copy.deepcopy(online), copy.deepcopy(online)
    for step in range(5):
        with torch.no_grad():
            for p in online.parameters():
                p.add_(torch.randn_like(p))
        online(torch.randn(4, 3, 6, 6))  # moves the BatchNorm statistics and its counter
        decay = ema_decay(step, 5, 0.9)
        ema_update_(fast, online, decay)
        _reference_ema_update(plain, online, decay)
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert int(fast[1].num_batches_tracked) == 6
