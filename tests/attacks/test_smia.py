# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import BIM, PGD
from monai_robust.attacks.smia import SMIA, prediction_kl
from tests.utils import SmallCNN

CASES = [(lp, dims, targeted) for lp in ("inf", 2) for dims in (2, 3) for targeted in (False, True)]


def _batch(dims: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (12,) * dims, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("lp,dims,targeted", CASES)
def test_budget_bounds_shape(lp, dims, targeted):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 3).eval()
    x, y = _batch(dims)
    eps = 0.03 if lp == "inf" else 0.5
    attack = SMIA(net, eps, lp=lp, beta=1.0, sigma=1.0, kernel_size=5, num_steps=3, bounds=(0.0, 1.0), targeted=targeted)
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert bool((lp_norm(adv - x, lp) <= eps + 1e-6).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("lp", ["inf", 2])
def test_beta_zero_is_bim_and_pgd(lp):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).eval()
    x, y = _batch(2)
    eps = 0.03 if lp == "inf" else 0.5
    kw = {"lp": lp, "bounds": (0.0, 1.0), "num_steps": 4, "step_size": eps / 3}
    assert torch.equal(SMIA(net, eps, beta=0.0, **kw)(x, y), BIM(net, eps, **kw)(x, y))
    defaults = {"lp": lp, "bounds": (0.0, 1.0)}  # SMIA's default step and start are BIM's
    assert torch.equal(SMIA(net, eps, beta=0.0, **defaults)(x, y), BIM(net, eps, **defaults)(x, y))
    smia = SMIA(net, eps, beta=0.0, random_start=True, **kw).set_random_state(11)
    pgd = PGD(net, eps, **kw).set_random_state(11)
    assert torch.equal(smia(x, y), pgd(x, y))


def test_stabilization_lower_than_pgd(pneumonia, pneumonia_model):
    x, y = pneumonia["test_images"][:64], pneumonia["test_labels"][:64]
    eps = 2 / 255
    smia = SMIA(pneumonia_model, eps, beta=10.0, num_steps=10, bounds=(0.0, 1.0))
    bim = BIM(pneumonia_model, eps, num_steps=10, step_size=smia.step_size, bounds=(0.0, 1.0))
    pgd = PGD(pneumonia_model, eps, num_steps=10, bounds=(0.0, 1.0)).set_random_state(0)
    kl_smia = smia.stabilization(smia(x, y)).mean()
    assert kl_smia < smia.stabilization(bim(x, y)).mean()
    assert kl_smia < smia.stabilization(pgd(x, y)).mean()
    # with a small beta the loss deviation still dominates: the loss rises
    adv = SMIA(pneumonia_model, eps, beta=0.1, num_steps=5, bounds=(0.0, 1.0))(x, y)
    with torch.no_grad():
        assert F.cross_entropy(pneumonia_model(adv), y) > F.cross_entropy(pneumonia_model(x), y)


def test_seeded_and_state_restored():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).train()
    net.fc.weight.requires_grad_(False)
    sentinel = torch.ones_like(net.features[0].weight)
    net.features[0].weight.grad = sentinel
    x, y = _batch(2)
    kw = {"beta": 1.0, "random_start": True, "num_steps": 2, "bounds": (0.0, 1.0)}
    with torch.no_grad():
        out1 = SMIA(net, 0.03, **kw).set_random_state(7)(x, y)
        out2 = SMIA(net, 0.03, **kw).set_random_state(7)(x, y)
    assert torch.equal(out1, out2)
    assert net.training and net.features[0].weight.requires_grad and not net.fc.weight.requires_grad
    assert net.features[0].weight.grad is sentinel and net.fc.bias.grad is None

    def bad_loss(logits, labels):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        SMIA(net, 0.03, bounds=(0.0, 1.0), loss=bad_loss)(x, y)
    assert net.training and net.features[0].weight.requires_grad and net.features[0].weight.grad is sentinel


def test_targeted_reaches_target():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)).eval()
    x, y = _batch(2, 8)
    target = (y + 1) % 3
    adv = SMIA(net, 0.5, beta=0.5, num_steps=20, bounds=(0.0, 1.0), targeted=True)(x, target)
    with torch.no_grad():
        assert bool((net(adv).argmax(1) == target).all())


@pytest.mark.parametrize("dims", [2, 3])
def test_smooth_keeps_level_and_kernel_support(dims):
    net = SmallCNN(dims, 1, 2)
    attack = SMIA(net, 0.01, sigma=1.0, kernel_size=5)
    ones = torch.ones((2, 3) + (9,) * dims)
    assert torch.allclose(attack.smooth(ones), ones, atol=1e-6)  # borders renormalised, no darkening
    impulse = torch.zeros((1, 1) + (9,) * dims)
    impulse[(0, 0) + (4,) * dims] = 1.0
    support = attack.smooth(impulse)[0, 0] > 0
    assert support.sum() == 5**dims  # kernel_size pixels per axis
    assert float(attack.smooth(impulse).sum()) == pytest.approx(1.0, abs=1e-5)
    # the banded-matrix blur is MONAI's GaussianFilter (zero padding) divided by its response to ones
    from monai.networks.layers import GaussianFilter

    x = torch.rand((2, 2, 7) + (9,) * (dims - 1), generator=torch.Generator().manual_seed(0))
    gauss = GaussianFilter(dims, 1.0, truncated=2.0)
    expected = gauss(x) / gauss(torch.ones((1, 1) + x.shape[2:]))
    assert torch.allclose(attack.smooth(x), expected, atol=1e-6)


def test_perturbation_smoothing_and_detach():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).eval()
    x, y = _batch(2)
    attack = SMIA(net, 0.03, beta=1.0, smoothing="perturbation", bounds=(0.0, 1.0), num_steps=3)
    assert torch.allclose(attack.stabilization(x, clean=x), torch.zeros(4), atol=1e-7)  # zero at delta = 0
    adv = attack(x, y)
    assert bool((lp_norm(adv - x, "inf") <= 0.03 + 1e-6).all())
    with pytest.raises(ValueError, match="clean"):
        attack.stabilization(adv)
    detached = SMIA(net, 0.03, beta=1.0, detach_smoothed=True, bounds=(0.0, 1.0), num_steps=3)(x, y)
    assert bool((lp_norm(detached - x, "inf") <= 0.03 + 1e-6).all())


def test_single_logit_head():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 1).eval()
    x, _ = _batch(2)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    attack = SMIA(net, 0.03, beta=1.0, bounds=(0.0, 1.0), num_steps=2)
    adv = attack(x, y)
    kl = attack.stabilization(adv)
    assert kl.shape == (4,) and bool(torch.isfinite(kl).all()) and bool((kl >= 0).all())


def test_prediction_kl():
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    p, q = a.softmax(1), b.softmax(1)
    assert float(prediction_kl(a, b)) == pytest.approx(float((q * (q / p).log()).sum()), rel=1e-5)
    assert float(prediction_kl(a, a)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": -1.0}, "beta"),
        ({"sigma": 0.0}, "sigma"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"kernel_size": 1}, "kernel_size"),
        ({"smoothing": "noise"}, "smoothing"),
        ({"num_steps": 0}, "num_steps"),
        ({"eps": -0.1}, "eps"),
    ],
)
def test_ill_args(kwargs, match):
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        SMIA(SmallCNN(2, 1, 3), **kwargs)


def test_bad_inputs():
    attack = SMIA(SmallCNN(2, 1, 3), 0.03, bounds=(0.0, 1.0), num_steps=1)
    x, y = _batch(2)
    with pytest.raises(ValueError, match="outside bounds"):
        attack(x + 2, y)
    with pytest.raises(ValueError, match="out of range"):
        attack(x, torch.tensor([0, 1, 2, 5]))
