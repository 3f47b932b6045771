# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.fab import FAB, project_hyperplane
from monai_robust.attacks.functional import lp_norm
from monai_robust.utils.enums import LpNorm


def _robust_acc(net: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((~is_adversarial(net(adv), y)).float().mean())


@pytest.mark.parametrize("lp", [LpNorm.LINF, LpNorm.L2])
def test_projection_on_plane_in_box_and_minimal(lp):
    g = torch.Generator().manual_seed(0)
    t, w = torch.rand(32, 20, generator=g), torch.randn(32, 20, generator=g)
    b = (w * torch.rand(32, 20, generator=g)).sum(1)  # the plane meets the box at a random point
    d = project_hyperplane(t, w, b, lp, (0.0, 1.0))
    assert torch.allclose(((t + d) * w).sum(1), b, atol=1e-4)
    assert float((t + d).min()) >= -1e-6 and float((t + d).max()) <= 1 + 1e-6
    unboxed = project_hyperplane(t, w, b, lp, None)  # the closed form: the box can only lengthen the step
    assert bool((lp_norm(d, lp) >= lp_norm(unboxed, lp) - 1e-6).all())
    # another box: the same step, scaled (x = lo + 4 u)
    d4 = project_hyperplane(t * 4 - 1, w, b * 4 - w.sum(1), lp, (-1.0, 3.0))
    assert torch.allclose(d4, 4 * d, atol=1e-4)
    ref = pytest.importorskip("torchattacks.attacks.fab", reason="torchattacks is not installed")
    project = ref.projection_linf if lp == LpNorm.LINF else ref.projection_l2
    assert torch.allclose(d, project(t, w, b), atol=1e-5)


@pytest.mark.parametrize("lp,eps,dims", [("inf", 0.1, 2), (2, 1.0, 2), ("inf", 0.03, 3), (2, 0.3, 3)])
def test_budget_bounds_early_stop(tiny_net, lp, eps, dims):
    net = tiny_net(dims, 4)
    x = torch.rand((6, 1) + (8,) * dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    adv = FAB(net, eps, lp=lp, num_steps=5, bounds=(0.0, 1.0))(x, y)
    fast = FAB(net, eps, lp=lp, num_steps=5, bounds=(0.0, 1.0), early_stop=True)(x, y)
    assert bool((lp_norm(adv - x, lp) <= eps * (1 + 1e-6)).all()) and 0 <= adv.min() <= adv.max() <= 1
    assert bool((lp_norm(fast - x, lp) <= eps * (1 + 1e-6)).all())
    fooled = is_adversarial(net(adv), y)
    assert bool(fooled.any()) and torch.equal(fooled, is_adversarial(net(fast), y))
    assert torch.equal(adv[~fooled], x[~fooled])  # not fooled: the clean image back


@pytest.mark.parametrize("lp,eps", [("inf", 4 / 255), (2, 0.3)])
def test_matches_torchattacks_binary(pneumonia_model, pneumonia_correct, lp, eps):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = pneumonia_model, pneumonia_correct["all_images"], pneumonia_correct["all_labels"]
    ours = _robust_acc(net, FAB(net, eps, lp=lp, num_steps=10, bounds=(0.0, 1.0))(x, y), y)
    norm = "Linf" if lp == "inf" else "L2"
    peer = torchattacks.FAB(net, norm=norm, eps=eps, steps=10, n_classes=2, multi_targeted=True, seed=0)
    theirs = _robust_acc(net, peer(x, y), y)
    assert ours < _robust_acc(net, x, y) - 0.1
    assert abs(ours - theirs) <= 0.01


def test_matches_torchattacks_four_classes(rotation):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = rotation["model"], rotation["images"][:64], rotation["labels"][:64]
    eps = 4 / 255
    ours = _robust_acc(net, FAB(net, eps, num_steps=10, num_target_classes=3, bounds=(0.0, 1.0))(x, y), y)
    peer = torchattacks.FAB(net, norm="Linf", eps=eps, steps=10, n_classes=4, multi_targeted=True, seed=0)
    assert abs(ours - _robust_acc(net, peer(x, y), y)) <= 0.01


def test_unbounded_and_args(tiny_net):
    net = tiny_net(2, 3)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    adv = FAB(net, 0.5, lp=2, num_steps=5, bounds=None)(x, y)
    assert bool((lp_norm(adv - x, 2) <= 0.5 * (1 + 1e-6)).all())
    for kwargs in ({"lp": 1}, {"targeted": True}, {"eta": 0.5}, {"beta": 1.5}, {"alpha_max": 1.0}, {"num_steps": 0}):
        with pytest.raises(ValueError):
            FAB(net, 0.1, **kwargs)
