# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from monai_robust.attacks.square import Square, _eta, square_fraction


class NoGradient(torch.nn.Module):
    """A model whose output carries no gradient (as behind a non-differentiable step): only a black box sees it."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)


def test_schedule_and_pattern():
    assert [square_fraction(i, 10000, 0.8) for i in (0, 10, 11, 51, 9000)] == [0.8, 0.8, 0.4, 0.2, 0.8 / 512]
    assert square_fraction(25, 500, 0.8) == 0.8 / 8  # rescaled: iteration 25 of 500 is 500 of 10000
    for dims in (2, 3):
        pattern = _eta(5, dims, dims - 1, torch.device("cpu"))
        assert pattern.shape == (5,) * dims and abs(float(pattern.norm()) - 1) < 1e-6 and abs(float(pattern.sum())) > 0


@pytest.mark.parametrize("lp,eps,dims", [("inf", 0.1, 2), (2, 1.0, 2), ("inf", 0.1, 3), (2, 1.0, 3)])
def test_budget_bounds_seed_black_box(tiny_net, lp, eps, dims):
    net = NoGradient(tiny_net(dims, 3))
    x = torch.rand((6, 1) + (8,) * dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    runs = [Square(net, eps, lp=lp, num_queries=60, bounds=(0.0, 1.0)).set_random_state(s)(x, y) for s in (3, 3, 4)]
    assert Square.black_box and torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert bool((lp_norm(runs[0] - x, lp) <= eps * (1 + 1e-5)).all()) and 0 <= runs[0].min() <= runs[0].max() <= 1
    assert bool(is_adversarial(net(runs[0]), y).any())  # no gradient needed
    with pytest.raises(RuntimeError):  # while gradient attacks cannot even start
        PGD(net, eps, lp=lp, bounds=(0.0, 1.0))(x, y)


def test_targeted_and_unbounded(tiny_net):
    net = tiny_net(2, 3)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = (net(x).argmax(1) + 1) % 3
    adv = Square(net, 0.2, num_queries=100, targeted=True, bounds=None).set_random_state(0)(x, target)
    assert bool((lp_norm(adv - x, "inf") <= 0.2 + 1e-6).all())
    hit = is_adversarial(net(adv), target, targeted=True)
    assert bool(hit.any()) and torch.equal(adv[~hit], x[~hit])


@pytest.mark.parametrize("lp,eps", [("inf", 8 / 255), (2, 1.0)])
def test_matches_torchattacks(pneumonia_model, pneumonia_correct, lp, eps):
    """Random search against random search: ours (a window per sample) and torchattacks' (one window per batch),
    100 queries on 64 test images, mean robust accuracy over 2 seeds each. Two runs differ by about 0.02 here
    from the random draws alone, so ours may not be higher than theirs by more than that (with 5 seeds, 300
    queries and 128 images the means agreed within 0.005)."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = pneumonia_model, pneumonia_correct["all_images"][:64], pneumonia_correct["all_labels"][:64]

    def robust(adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((~is_adversarial(net(adv), y)).float().mean())

    norm = "Linf" if lp == "inf" else "L2"
    ours = sum(robust(Square(net, eps, lp=lp, num_queries=100, bounds=(0.0, 1.0)).set_random_state(s)(x, y)) for s in (0, 1))
    theirs = sum(robust(torchattacks.Square(net, norm=norm, eps=eps, n_queries=100, seed=s)(x, y)) for s in (0, 1))
    assert ours / 2 < robust(x) - 0.1  # the budget matters: the comparison means something
    assert theirs / 2 - 0.05 <= ours / 2 <= theirs / 2 + 0.02


def test_args():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    for kwargs in ({"lp": 1}, {"num_queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"loss": lambda z, y: z.sum(1)}):
        with pytest.raises(ValueError):
            Square(net, 0.1, **kwargs)
