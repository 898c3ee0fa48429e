import copy
import math

import pytest
import torch
from torch import nn

from vito_train.optim import build_lars, build_optimizer, lars_param_groups, learning_rate, set_learning_rate


def test_learning_rate_warmup_then_cosine():
    kw = dict(base_lr=0.2, batch_size=512, warmup_steps=10, total_steps=110)
    peak = 0.2 * 512 / 256
    assert learning_rate(0, **kw) == pytest.approx(peak / 10)
    assert learning_rate(9, **kw) == pytest.approx(peak)
    assert learning_rate(10, **kw) == pytest.approx(peak)
    assert learning_rate(60, **kw) == pytest.approx(peak * 0.5)
    assert learning_rate(110, **kw) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(110, final_ratio=0.1, **kw) == pytest.approx(peak * 0.1)


def test_biases_and_norm_parameters_are_excluded_from_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    decay, no_decay = lars_param_groups(model, 1e-6)
    assert [p.shape for p in decay["params"]] == [(4, 3)]
    assert sorted(p.numel() for p in no_decay["params"]) == [4, 4, 4]
    assert no_decay["weight_decay"] == 0.0


def test_lars_step_matches_hand_computed_update():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))  # |w| = 5
        model.bias.fill_(1.0)
    model.weight.grad = torch.tensor([[0.6, 0.8]])  # |g| = 1
    model.bias.grad = torch.tensor([0.5])
    lr, wd, eta = 0.1, 0.01, 0.001
    optimizer = build_lars(model, weight_decay=wd, momentum=0.9, trust_coeff=eta)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    trust = eta * 5 / (1 + 5 * wd + 1e-8)
    expected_w = torch.tensor([[3.0, 4.0]]) - lr * trust * (
        torch.tensor([[0.6, 0.8]]) + wd * torch.tensor([[3.0, 4.0]])
    )
    assert torch.allclose(model.weight, expected_w, atol=1e-7)
    # bias: no decay and no trust ratio -> plain SGD step
    assert model.bias.item() == pytest.approx(1.0 - lr * 0.5)
    assert math.isclose(trust, 0.001 * 5 / 1.05, rel_tol=1e-6)


def test_multi_tensor_lars_matches_the_per_tensor_loop_over_steps():
    """build_lars's default (timm's foreach form) gives the per-tensor loop's update to 1e-6."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.Linear(16, 4),
    )
    initial = copy.deepcopy(model)
    models = [model, copy.deepcopy(model)]
    optimizers = [
        build_lars(m, weight_decay=1.5e-6, momentum=0.9, trust_coeff=0.001, foreach=f)
        for m, f in zip(models, (False, True), strict=True)
    ]
    assert [g["foreach"] for g in optimizers[1].param_groups] == [True, True]
    for step in range(4):
        x = torch.randn(6, 3, 6, 6)
        for m, opt in zip(models, optimizers, strict=True):
            set_learning_rate(opt, 3.0 * (step + 1) / 4)
            opt.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    pairs = zip(models[1].parameters(), initial.parameters(), strict=True)
    moved = [(a - b).abs().max().item() for a, b in pairs]
    assert min(moved) > 0  # every tensor was updated: the comparison is not between untouched weights


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_small_batch_optimisers_step_plainly_and_spare_bn_and_biases_from_decay(name):
    """sgd: w - lr (g + wd w) on weights, w - lr g on biases (first step, momentum buffer = g);
    adamw: every parameter moves by about lr (Adam's first step is lr * sign(g)), decay on weights only."""
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        model.bias.fill_(1.0)
    model.weight.grad = torch.tensor([[0.6, -0.8]])
    model.bias.grad = torch.tensor([0.5])
    lr, wd = 0.1, 0.01
    optimizer = build_optimizer(name, model, weight_decay=wd, momentum=0.9, trust_coeff=0.001)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [wd, 0.0]
    set_learning_rate(optimizer, lr)
    optimizer.step()
    w0 = torch.tensor([[3.0, 4.0]])
    if name == "sgd":
        expected_w = w0 - lr * (torch.tensor([[0.6, -0.8]]) + wd * w0)
        expected_b = 1.0 - lr * 0.5
    else:
        expected_w = w0 * (1 - lr * wd) - lr * torch.tensor([[1.0, -1.0]])
        expected_b = 1.0 - lr
    assert torch.allclose(model.weight, expected_w, atol=1e-5)
    assert model.bias.item() == pytest.approx(expected_b, abs=1e-5)


def test_unknown_optimiser_is_refused():
    with pytest.raises(ValueError, match="not lars, sgd or adamw"):
        build_optimizer("adam", nn.Linear(2, 1), weight_decay=0.0, momentum=0.9, trust_coeff=0.001)
