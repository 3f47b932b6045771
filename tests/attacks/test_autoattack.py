# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.autoattack import STANDARD_ATTACKS, AutoAttack, AutoAttackResult
from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.square import Square

FAST = {"num_steps": 10, "num_queries": 100}


def _robust(net: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ~is_adversarial(net(adv), y)


def _torchattacks_autoattack(torchattacks, net, norm: str, eps: float, classes: int, queries: int):
    """torchattacks' standard AutoAttack with Square's 5000 queries (hard-coded there) set to ``queries``."""
    aa = torchattacks.AutoAttack(net, norm=norm, eps=eps, version="standard", n_classes=classes, seed=0)
    square = aa._autoattack.attacks[-1]
    assert isinstance(square, torchattacks.Square)
    square.n_queries = queries
    return aa


@pytest.mark.parametrize("lp,eps", [("inf", 4 / 255)])  # L2: each attack is checked against its peer on its own
def test_matches_torchattacks_four_classes(rotation, lp, eps):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = rotation["model"], rotation["images"][:64], rotation["labels"][:64]
    attack = AutoAttack(net, eps, lp=lp, bounds=(0.0, 1.0), **FAST).set_random_state(0)
    adv, result = attack.run(x, y)
    robust = _robust(net, adv, y)
    assert torch.equal(result.robust, robust)  # the record agrees with the model
    assert bool((lp_norm(adv - x, lp) <= eps * (1 + 1e-5)).all()) and 0 <= adv.min() <= adv.max() <= 1
    peer = _torchattacks_autoattack(torchattacks, net, "Linf" if lp == "inf" else "L2", eps, 4, FAST["num_queries"])
    theirs = float(_robust(net, peer(x, y), y).float().mean())
    ours = float(robust.float().mean())
    assert ours < float(_robust(net, x, y).float().mean()) - 0.05
    assert abs(ours - theirs) <= 0.01
    counts = result.counts()
    assert set(counts) <= {"clean", None, *STANDARD_ATTACKS} and sum(counts.values()) == len(y)


def test_binary_where_torchattacks_fails(pneumonia_model, pneumonia_correct):
    """torchattacks' AutoAttack raises IndexError on 2 classes; ours runs, and is at least as strong as torchattacks'
    attacks that do run there (APGD-CE, FAB-T, Square in AutoAttack's order, per-sample worst case)."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = pneumonia_model, pneumonia_correct["all_images"][:64], pneumonia_correct["all_labels"][:64]
    eps = 4 / 255
    with pytest.raises(IndexError):
        _torchattacks_autoattack(torchattacks, net, "Linf", eps, 2, 10)(x, y)
    adv, result = AutoAttack(net, eps, bounds=(0.0, 1.0), **FAST).set_random_state(0).run(x, y)
    ours = float(_robust(net, adv, y).float().mean())
    peers = [
        torchattacks.APGD(net, eps=eps, steps=10, seed=0),
        torchattacks.FAB(net, eps=eps, steps=10, n_classes=2, multi_targeted=True, seed=0),
        torchattacks.Square(net, eps=eps, n_queries=FAST["num_queries"], seed=0),
    ]
    theirs = float(_robust(net, torchattacks.MultiAttack(peers)(x, y), y).float().mean())
    assert ours <= theirs + 0.01 and ours < float(_robust(net, x, y).float().mean()) - 0.1
    assert result.counts().get("apgd-ce", 0) > 0


def test_single_logit_head_and_any_box(pneumonia_model, pneumonia_correct):
    """A single logit f = z1 - z0 is the same classifier: the same samples break, by the same attacks. Inputs in
    [-1, 1] (u = 2x - 1) with twice the budget are the same threat model: again the same outcome."""
    net, x, y = pneumonia_model, pneumonia_correct["all_images"][:32], pneumonia_correct["all_labels"][:32]
    eps = 4 / 255

    class OneLogit(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            z = net(images)
            return z[:, 1:] - z[:, :1]

    class Centred(torch.nn.Module):
        def forward(self, u: torch.Tensor) -> torch.Tensor:
            return net((u + 1) / 2)

    kw = {"num_steps": 5, "num_queries": 30}
    _, ref = AutoAttack(net, eps, bounds=(0.0, 1.0), **kw).set_random_state(0).run(x, y)
    _, one = AutoAttack(OneLogit(), eps, bounds=(0.0, 1.0), **kw).set_random_state(0).run(x, y.float()[:, None])
    adv_c, centred = AutoAttack(Centred(), 2 * eps, bounds=(-1.0, 1.0), **kw).set_random_state(0).run(2 * x - 1, y)
    assert one.broken_by == ref.broken_by
    assert centred.broken_by == ref.broken_by
    assert float(adv_c.min()) >= -1 and bool((lp_norm(adv_c - (2 * x - 1), "inf") <= 2 * eps * (1 + 1e-5)).all())
    assert not bool(ref.robust.all())


def test_3d_seeded(tiny_net):
    net = tiny_net(3, 3)
    x = torch.rand(6, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    outs = [AutoAttack(net, 0.02, lp="inf", bounds=(0.0, 1.0), **FAST).set_random_state(5).run(x, y) for _ in (0, 1)]
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
    adv, result = outs[0]
    assert bool((lp_norm(adv - x, "inf") <= 0.02 * (1 + 1e-5)).all())
    assert torch.equal(result.robust, _robust(net, adv, y)) and not bool(result.robust.all())


def test_checks_every_returned_point(tiny_net, monkeypatch):
    net = tiny_net(2, 3)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        y = net(x).argmax(1)
    monkeypatch.setattr(Square, "perturb", lambda self, images, labels, eps: images + 2 * eps)
    with pytest.raises(RuntimeError, match="square returned"):
        AutoAttack(net, 1e-4, attacks=("square",), bounds=(0.0, 1.0)).run(x, y)


def test_args():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    bad = [{"lp": 1}, {"attacks": ("apgd-ce", "apgd-ce")}, {"attacks": ("pgd",)}, {"attacks": ()}, {"targeted": True},
           {"loss": lambda z, t: z.sum(1)}, {"num_queries": 0}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            AutoAttack(net, 0.1, **kwargs)
    with pytest.raises(ValueError, match="multi-label"):
        AutoAttack(net, 0.1, bounds=(0.0, 1.0))(torch.rand(2, 1, 2, 2), torch.ones(2, 3))
    assert AutoAttackResult((None, "clean")).counts() == {None: 1, "clean": 1}


def test_eps_at_the_call(tiny_net):
    """One ensemble without a budget of its own serves every eps of a sweep; each call stays inside its ball."""
    net = tiny_net(2, 3)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)
    attack = AutoAttack(net, lp=2, bounds=(0.0, 1.0), attacks=("apgd-ce", "fab-t"), num_steps=5).set_random_state(0)
    with pytest.raises(ValueError, match="eps"):
        attack(x, y)
    for eps in (0.2, 1.0):
        adv, result = attack.run(x, y, eps=eps)
        assert bool((lp_norm(adv - x, 2) <= eps * (1 + 1e-5)).all()) and torch.equal(result.robust, _robust(net, adv, y))
    assert not bool(result.robust.all())


def test_uses_black_box(tiny_net):
    """The gradient-masking check must not count an ensemble holding Square as white box."""
    net = tiny_net(2, 2)
    assert AutoAttack(net, bounds=(0.0, 1.0)).uses_black_box
    assert not AutoAttack(net, attacks=("apgd-ce", "apgd-t", "fab-t"), bounds=(0.0, 1.0)).uses_black_box
    assert Square(net, bounds=(0.0, 1.0)).uses_black_box
