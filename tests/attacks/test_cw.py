# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_robust.attacks.base import MinimizationAttack, is_adversarial
from monai_robust.attacks.cw import CW
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from tests.utils import TEST_NDARRAYS


def _rand(dims: int, n: int = 8) -> torch.Tensor:
    return torch.rand((n, 1) + (8,) * dims, generator=torch.Generator().manual_seed(1))


def _fooled(net, adv, labels, targeted=False) -> torch.Tensor:
    with torch.no_grad():
        return is_adversarial(net(adv), labels, targeted)


@pytest.fixture(scope="module")
def cw_trained(pneumonia_model, pneumonia_correct):
    """CW on 32 correctly classified PneumoniaMNIST test images (shared by the property tests below)."""
    x, y = pneumonia_correct["images"][:32], pneumonia_correct["labels"][:32]
    adv = CW(pneumonia_model, bounds=(0.0, 1.0), num_steps=50, binary_search_steps=5, initial_const=1.0)(x, y)
    return x, y, adv


def test_trained_success_bounds_and_minimality(pneumonia_model, cw_trained):
    net, (x, y, adv) = pneumonia_model, cw_trained
    fooled = _fooled(net, adv, y)
    assert fooled.float().mean() >= 0.95
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(adv[~fooled], x[~fooled])  # failures come back unchanged
    # minimal along its own direction: 90 % of each perturbation no longer fools
    assert _fooled(net, x + 0.9 * (adv - x), y)[fooled].float().mean() <= 0.1
    # as small as a stronger, larger-budget search finds: at each budget E, CW has (almost) as many samples within
    # E as 50-step PGD-L2 fools with budget E
    l2 = torch.where(fooled, lp_norm(adv - x, 2), torch.full_like(fooled, math.inf, dtype=x.dtype))
    med = float(l2.median())
    for scale in (0.8, 1.25):
        e = scale * med
        pgd = PGD(net, e, lp=2, bounds=(0.0, 1.0), num_steps=50, step_size=e / 10)
        pgd.set_random_state(0)
        assert (l2 <= e).float().mean() >= _fooled(net, pgd(x, y), y).float().mean() - 2 / len(y)


def test_binary_search_lowers_norm(tiny_net):
    """The first round is the same; keeping each sample's best over rounds can only shrink it, and the search
    over c (starting too high) must shrink it clearly."""
    net, x = tiny_net(2, 3), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    kw = {"bounds": (0.0, 1.0), "num_steps": 100, "initial_const": 100.0, "abort_early": False}
    one, four = CW(net, binary_search_steps=1, **kw)(x, y), CW(net, binary_search_steps=4, **kw)(x, y)
    f1, f4 = _fooled(net, one, y), _fooled(net, four, y)
    assert bool(f1.all()) and bool(f4.all())
    l1, l4 = lp_norm(one - x, 2), lp_norm(four - x, 2)
    assert bool((l4 <= l1 + 1e-6).all())
    assert float(l4.median()) < 0.85 * float(l1.median())


def test_confidence_margin(tiny_net):
    net, x = tiny_net(2, 3), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    attack = CW(net, bounds=(0.0, 1.0), num_steps=50, binary_search_steps=3, initial_const=10.0, confidence=0.05)
    adv = attack(x, y)
    with torch.no_grad():
        logits = net(adv)
    fooled = is_adversarial(logits, y)
    assert fooled.float().mean() >= 0.75
    assert bool((attack.margin(logits, y)[fooled] > 0.05).all())
    plain = CW(net, bounds=(0.0, 1.0), num_steps=50, binary_search_steps=3, initial_const=10.0)(x, y)
    both = fooled & _fooled(net, plain, y)
    assert float(lp_norm(adv - x, 2)[both].median()) > float(lp_norm(plain - x, 2)[both].median())


def test_no_budget_failures_unchanged(tiny_net):
    """A minimisation attack: no eps; the smallest adversarial found, failures returned unchanged, the per-round
    success in last_progress."""
    net, x = tiny_net(2, 3), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    kw = {"bounds": (0.0, 1.0), "num_steps": 100, "binary_search_steps": 5}
    attack = CW(net, **kw)
    free = attack(x, y)
    assert bool(_fooled(net, free, y).all())
    assert len(attack.last_progress) == 5 and attack.last_progress[-1] == 1.0
    weak = CW(net, bounds=(0.0, 1.0), num_steps=2, binary_search_steps=1, initial_const=1e-6, abort_early=False)
    adv = weak(x, y)
    fooled = _fooled(net, adv, y)
    assert torch.equal(adv[~fooled], x[~fooled]) and weak.last_progress == [float(fooled.float().mean())]
    with pytest.raises(TypeError):
        CW(net, 0.5, **kw)  # no budget: thresholding is the caller's


def test_early_stop_ends_at_first_success(tiny_net):
    net, x = tiny_net(2, 3), _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    forwards = []
    net.register_forward_hook(lambda *_: forwards.append(1))
    kw = {"bounds": (0.0, 1.0), "num_steps": 50, "binary_search_steps": 3, "initial_const": 10.0}
    full = CW(net, **kw)(x, y)
    n_full, forwards[:] = len(forwards), []
    fast = CW(net, early_stop=True, **kw)(x, y)
    assert len(forwards) < n_full / 2
    assert bool(_fooled(net, fast, y).all()) and bool(_fooled(net, full, y).all())
    forwards[:] = []
    CW(net, **kw)(x, y, early_stop=True)  # the call's override
    assert len(forwards) < n_full / 2


def test_intensity_range_invariance(tiny_net):
    """The distance is measured in box widths: on data mapped to [-1, 2] (and a net that undoes the map),
    CW takes the same steps, so perturbations scale by the box width."""
    net = tiny_net(2, 3)
    x = _rand(2)
    with torch.no_grad():
        y = net(x).argmax(1)
    scaled = torch.nn.Sequential(_Affine(1 / 3, 1 / 3), net).eval()  # (v + 1) / 3 maps [-1, 2] onto [0, 1]
    kw = {"num_steps": 30, "binary_search_steps": 3, "initial_const": 1.0}
    a = CW(net, bounds=(0.0, 1.0), **kw)(x, y)
    b = CW(scaled, bounds=(-1.0, 2.0), **kw)(3 * x - 1, y)
    assert float(b.min()) >= -1.0 and float(b.max()) <= 2.0
    fa, fb = _fooled(net, a, y), _fooled(scaled, b, y)
    assert torch.equal(fa, fb) and bool(fa.any())
    torch.testing.assert_close(lp_norm(b - (3 * x - 1), 2)[fa], 3 * lp_norm(a - x, 2)[fa], rtol=2e-2, atol=1e-4)


class _Affine(torch.nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.scale + self.shift


@pytest.mark.parametrize("dims,classes,targeted", [(d, c, t) for d in (2, 3) for c in (1, 3) for t in (False, True)])
def test_2d_3d_binary_multiclass_targeted(tiny_net, dims, classes, targeted):
    net = tiny_net(dims, classes)
    x = _rand(dims)
    with torch.no_grad():
        logits = net(x)
    y = (logits[:, 0] > 0).long() if classes == 1 else logits.argmax(1)
    labels = (y + 1) % max(classes, 2) if targeted else y
    adv = CW(net, bounds=(0.0, 1.0), num_steps=30, binary_search_steps=4, targeted=targeted)(x, labels)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    fooled = _fooled(net, adv, labels, targeted)
    assert fooled.float().mean() >= 0.75
    assert torch.equal(adv[~fooled], x[~fooled])


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_types_roundtrip(tiny_net, to_type):
    x = _rand(2, 4)
    data = to_type(x.numpy() if to_type is np.array else x)
    out = CW(tiny_net(2, 3), bounds=(0.0, 1.0), num_steps=3, binary_search_steps=1)(data, torch.arange(4) % 3)
    assert type(out) is type(data) and tuple(out.shape) == tuple(x.shape)


def test_seeded_reproducible_and_state_restored(tiny_net):
    net = tiny_net(2, 3).train()
    net[0].weight.requires_grad_(False)
    sentinel = torch.ones_like(net[3].weight)
    net[3].weight.grad = sentinel
    x = _rand(2)
    outs = []
    for _ in range(2):
        attack = CW(net, bounds=(0.0, 1.0), num_steps=10, binary_search_steps=2)
        attack.set_random_state(3)
        with torch.no_grad():
            outs.append(attack(x, torch.arange(8) % 3))
    assert torch.equal(outs[0], outs[1])
    assert net.training and not net[0].weight.requires_grad and net[3].weight.requires_grad
    assert net[3].weight.grad is sentinel and net[3].bias.grad is None
    with pytest.raises(ValueError, match="multi-label"):  # raised inside the attack: state still restored
        CW(net, bounds=(0.0, 1.0), num_steps=1)(x, torch.zeros(8, 3))
    assert net.training and not net[0].weight.requires_grad and net[3].weight.grad is sentinel


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bounds": None}, "bounds"),
        ({"lp": "inf"}, "'inf'"),
        ({"lp": 1}, "L2 attack"),
        ({"loss": torch.nn.functional.cross_entropy}, "no loss"),
        ({"num_steps": 0}, "num_steps=0"),
        ({"binary_search_steps": 0}, "binary_search_steps=0"),
        ({"initial_const": 0.0}, "initial_const=0.0"),
        ({"confidence": -1.0}, "confidence=-1.0"),
        ({"learning_rate": -0.1}, "learning_rate=-0.1"),
        ({"bounds": (1.0, 0.0)}, r"\(1.0, 0.0\)"),
    ],
)
def test_ill_args(tiny_net, kwargs, match):
    kwargs = {"bounds": (0.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        CW(tiny_net(2, 3), **kwargs)


def test_minimization_type_and_input_check(tiny_net):
    net = tiny_net(2, 3)
    assert isinstance(CW(net, bounds=(0.0, 1.0)), MinimizationAttack) and not hasattr(CW(net, bounds=(0.0, 1.0)), "eps")
    with pytest.raises(ValueError, match="outside bounds"):
        CW(net, bounds=(0.0, 1.0))(_rand(2) + 2, torch.zeros(8, dtype=torch.long))
