# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_robust.attacks.base import MinimizationAttack, is_adversarial
from monai_robust.attacks.deepfool import DeepFool
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from tests.utils import TEST_NDARRAYS


def _rand(dims: int, n: int = 8) -> torch.Tensor:
    return torch.rand((n, 1) + (8,) * dims, generator=torch.Generator().manual_seed(1))


def _fooled(net, adv, labels) -> torch.Tensor:
    with torch.no_grad():
        return is_adversarial(net(adv), labels)


@pytest.mark.parametrize("lp", [2, "inf"])
def test_trained_success_bounds_and_minimality(pneumonia_model, pneumonia_correct, lp):
    net = pneumonia_model
    x, y = pneumonia_correct["images"][:32], pneumonia_correct["labels"][:32]
    adv = DeepFool(net, lp=lp, bounds=(0.0, 1.0))(x, y)
    fooled = _fooled(net, adv, y)
    assert fooled.float().mean() >= 0.95
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(adv[~fooled], x[~fooled])
    # close to the boundary: 90 % of each perturbation rarely still fools
    assert _fooled(net, x + 0.9 * (adv - x), y)[fooled].float().mean() <= 0.25
    # not far from minimal: at half DeepFool's median budget, a 50-step PGD fools fewer samples than DeepFool
    # has within that median
    norms = torch.where(fooled, lp_norm(adv - x, lp), torch.full_like(fooled, math.inf, dtype=x.dtype))
    med = float(norms.median())
    pgd = PGD(net, med / 2, lp=lp, bounds=(0.0, 1.0), num_steps=50, step_size=med / 20)
    pgd.set_random_state(0)
    assert _fooled(net, pgd(x, y), y).float().mean() < (norms <= med).float().mean()


def test_misclassified_unchanged(pneumonia_model, pneumonia_correct):
    net = pneumonia_model
    x, y = pneumonia_correct["images"][:8], pneumonia_correct["labels"][:8]
    wrong = 1 - y  # every sample already "misclassified" w.r.t. these labels
    assert torch.equal(DeepFool(net, bounds=(0.0, 1.0))(x, wrong), x)


@pytest.mark.parametrize("dims,classes,lp", [(d, c, lp) for d in (2, 3) for c in (1, 3, 10) for lp in (2, "inf")])
def test_2d_3d_binary_multiclass(tiny_net, dims, classes, lp):
    net = tiny_net(dims, classes)
    x = _rand(dims)
    with torch.no_grad():
        logits = net(x)
    y = (logits[:, 0] > 0).long() if classes == 1 else logits.argmax(1)
    adv = DeepFool(net, lp=lp, bounds=(0.0, 1.0))(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    fooled = _fooled(net, adv, y)
    assert fooled.float().mean() >= 0.75
    assert torch.equal(adv[~fooled], x[~fooled])


def test_candidates_overshoot_and_no_bounds(tiny_net):
    net, x = tiny_net(2, 10), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    norms = {}
    for k in (2, 4, 10):
        adv = DeepFool(net, num_candidates=k, bounds=(0.0, 1.0))(x, y)
        assert bool(_fooled(net, adv, y).all())
        norms[k] = lp_norm(adv - x, 2)
    # more candidates, a nearer boundary among them (the first step of k=10 sees every boundary of k=4)
    assert float(norms[10].median()) <= float(norms[2].median()) + 1e-6
    exact = DeepFool(net, overshoot=0.0, bounds=(0.0, 1.0))(x, y)  # no overshoot: the 1e-4 margin still crosses
    assert bool(_fooled(net, exact, y).all())
    assert float(lp_norm(exact - x, 2).sum()) < float(norms[10].sum())
    free = DeepFool(net)(x, y)  # no box: not clipped
    assert bool(_fooled(net, free, y).all())


def test_failures_unchanged_and_progress(tiny_net):
    net, x = tiny_net(2, 3), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    attack = DeepFool(net, bounds=(0.0, 1.0), num_steps=1)
    adv = attack(x, y)
    fooled = _fooled(net, adv, y)
    assert torch.equal(adv[~fooled], x[~fooled])
    assert all(0 <= p <= 1 for p in attack.last_progress)
    assert all(b >= a for a, b in zip(attack.last_progress, attack.last_progress[1:]))  # cumulative


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_types_roundtrip(tiny_net, to_type):
    x = _rand(2, 4)
    data = to_type(x.numpy() if to_type is np.array else x)
    out = DeepFool(tiny_net(2, 3), bounds=(0.0, 1.0), num_steps=3)(data, torch.arange(4) % 3)
    assert type(out) is type(data) and tuple(out.shape) == tuple(x.shape)


def test_seeded_reproducible_and_state_restored(tiny_net):
    net = tiny_net(3, 3).train()
    net[0].weight.requires_grad_(False)
    sentinel = torch.ones_like(net[3].weight)
    net[3].weight.grad = sentinel
    x = _rand(3)
    outs = []
    for _ in range(2):
        attack = DeepFool(net, bounds=(0.0, 1.0))
        attack.set_random_state(3)
        with torch.no_grad():
            outs.append(attack(x, torch.arange(8) % 3))
    assert torch.equal(outs[0], outs[1])
    assert net.training and not net[0].weight.requires_grad and net[3].weight.requires_grad
    assert net[3].weight.grad is sentinel and net[3].bias.grad is None
    with pytest.raises(ValueError, match="multi-label"):  # raised inside the attack: state still restored
        DeepFool(net)(x, torch.zeros(8, 3))
    assert net.training and not net[0].weight.requires_grad and net[3].weight.grad is sentinel


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"targeted": True}, "targeted=True"),
        ({"lp": 1}, "lp=1"),
        ({"loss": torch.nn.functional.cross_entropy}, "no loss"),
        ({"num_steps": 0}, "num_steps=0"),
        ({"overshoot": -0.1}, "overshoot=-0.1"),
        ({"num_candidates": 1}, "got 1"),
        ({"bounds": (1.0, 0.0)}, r"\(1.0, 0.0\)"),
    ],
)
def test_ill_args(tiny_net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepFool(tiny_net(2, 3), **kwargs)


def test_minimization_type(tiny_net):
    net = tiny_net(2, 3)
    assert isinstance(DeepFool(net), MinimizationAttack) and DeepFool(net).lp == "2"
    attack = DeepFool(net, lp="inf", bounds=(0.0, 1.0))
    assert attack.lp == "inf" and attack.bounds == (0.0, 1.0)
