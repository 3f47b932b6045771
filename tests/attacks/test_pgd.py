# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_robust.attacks import APGD, BIM, FGSM, PGD, SMIA, lp_norm
from tests.utils import TEST_NDARRAYS, SmallCNN

CASES = [(cls, lp, dims) for cls in (FGSM, BIM, PGD) for lp in ("inf", 2) for dims in (2, 3)]


def _batch(dims: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (12,) * dims, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("cls,lp,dims", CASES)
def test_budget_bounds_loss(cls, lp, dims):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 3).eval()
    x, y = _batch(dims)
    eps = 0.03 if lp == "inf" else 0.5
    adv = cls(net, eps, lp=lp, bounds=(0.0, 1.0))(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert bool((lp_norm(adv - x, lp) <= eps + 1e-6).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert ce(net(adv), y) >= ce(net(x), y)


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_types_roundtrip(to_type):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3)
    x, y = _batch(2)
    out = PGD(net, 0.03, bounds=(0.0, 1.0), num_steps=2)(to_type(x.numpy() if to_type is np.array else x), y)
    assert type(out) is type(to_type(x.numpy() if to_type is np.array else x))


def test_seed_and_state_restored():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).train()
    net.fc.weight.requires_grad_(False)
    sentinel = torch.ones_like(net.features[0].weight)
    net.features[0].weight.grad = sentinel
    x, y = _batch(2)
    a1 = PGD(net, 0.03, bounds=(0.0, 1.0), num_steps=3)
    a1.set_random_state(7)
    a2 = PGD(net, 0.03, bounds=(0.0, 1.0), num_steps=3)
    a2.set_random_state(7)
    with torch.no_grad():
        out1, out2 = a1(x, y), a2(x, y)
    assert torch.equal(out1, out2)
    assert net.training and net.features[0].weight.requires_grad and not net.fc.weight.requires_grad
    assert net.features[0].weight.grad is sentinel and net.fc.bias.grad is None


def test_state_restored_when_raising():
    net = SmallCNN(2, 1, 3).train()

    def bad_loss(logits, labels):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PGD(net, 0.03, bounds=(0.0, 1.0), loss=bad_loss)(*_batch(2))
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_early_stop_and_targeted():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)).eval()
    x, y = _batch(2, 8)
    target = (y + 1) % 3
    adv = PGD(net, 0.5, bounds=(0.0, 1.0), num_steps=20, targeted=True, early_stop=True)(x, target)
    with torch.no_grad():
        assert bool((net(adv).argmax(1) == target).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": 0.1, "num_steps": 0}, "num_steps"),
        ({"eps": 0.1, "bounds": (1.0, 0.0)}, "bounds"),
        ({"eps": 0.1, "step_size": -1.0}, "step_size"),
        ({"eps": 0.1, "lp": 3}, "lp"),
    ],
)
def test_ill_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PGD(SmallCNN(2, 1, 3), **kwargs)


def test_bad_inputs():
    net = SmallCNN(2, 1, 3)
    attack = PGD(net, 0.03, bounds=(0.0, 1.0), num_steps=1)
    x, y = _batch(2)
    with pytest.raises(ValueError, match="outside bounds"):
        attack(x + 2, y)
    xn = x.clone()
    xn[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        attack(xn, y)
    with pytest.raises(ValueError, match="out of range"):
        attack(x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="labels must be"):
        attack(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="spatial"):
        attack(x[:, 0, 0], y)
    with pytest.raises(ValueError, match="logits"):
        PGD(torch.nn.Conv2d(1, 2, 3), 0.1, num_steps=1)(x, y)


@pytest.mark.parametrize("cls", [FGSM, BIM, PGD, APGD, SMIA])
def test_eps_is_a_call_argument(cls):
    """One object serves every budget: ``attack(x, y, eps=e)`` equals the attack built with ``e`` (same seed), the
    default step follows the call's eps, and a missing or bad budget is refused."""
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).eval()
    x, y = _batch(2)
    kw = {"bounds": (0.0, 1.0)} | ({} if cls is FGSM else {"num_steps": 3})
    shared = cls(net, **kw)
    for e in (0.01, 0.03):
        built = cls(net, e, **kw).set_random_state(5)(x, y)
        assert torch.equal(shared.set_random_state(5)(x, y, eps=e), built)
    with pytest.raises(ValueError, match="built without eps"):
        shared(x, y)
    with pytest.raises(ValueError, match="eps=-0.1"):
        shared(x, y, eps=-0.1)
    with pytest.raises(ValueError, match="model-input units"):
        shared(x, y, eps=8.0)  # L-inf larger than the box


def test_step_size_absolute_or_relative():
    net = SmallCNN(2, 1, 3).eval()
    assert PGD(net, num_steps=10).step_for(0.04) == pytest.approx(0.01)
    assert PGD(net, step_size=0.002).step_for(0.04) == 0.002 and PGD(net, rel_step_size=0.5).step_for(0.04) == 0.02
    with pytest.raises(ValueError, match="not both"):
        PGD(net, step_size=0.1, rel_step_size=0.5)
