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
