# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.apgd import APGD, apgd_checkpoints, dlr_loss, targeted_dlr_loss
from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from tests.utils import TEST_NDARRAYS, SmallCNN

EPS = {"inf": 0.03, 2: 0.5}
CASES = [(lp, dims, loss) for lp in ("inf", 2) for dims in (2, 3) for loss in (None, dlr_loss)]


def _batch(dims: int, n: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (size,) * dims, generator=g), torch.arange(n) % 3


class CountingNet(torch.nn.Module):
    """Counts the samples it sees, to check how much work early stop saves."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("lp,dims,loss", CASES)
def test_budget_bounds_best_point(lp, dims, loss):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 3).eval()
    x, y = _batch(dims, size=8 if dims == 3 else 12)
    eps = EPS[lp]
    attack = APGD(net, eps, lp=lp, bounds=(0.0, 1.0), num_steps=6, loss=loss)
    attack.set_random_state(0)
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert bool((lp_norm(adv - x, lp) <= eps + 1e-6).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    # the returned point is adversarial or the best of the run: never below the same run stopped after one step
    one = APGD(net, eps, lp=lp, bounds=(0.0, 1.0), num_steps=1, loss=loss)
    one.set_random_state(0)
    with torch.no_grad():
        crit = loss or (lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="none"))
        fooled = is_adversarial(net(adv), y)
        gain = crit(net(adv), y) >= crit(net(one(x, y)), y) - 1e-5
    assert bool((fooled | gain).all())


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_types_roundtrip(to_type):
    torch.manual_seed(0)
    x, y = _batch(2)
    images = to_type(x.numpy() if to_type is not torch.as_tensor else x)
    out = APGD(SmallCNN(2, 1, 3), 0.03, bounds=(0.0, 1.0), num_steps=2)(images, y)
    assert type(out) is type(images) and tuple(out.shape) == tuple(x.shape)


def test_seed_and_state_restored():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).train()
    net.fc.weight.requires_grad_(False)
    sentinel = torch.ones_like(net.features[0].weight)
    net.features[0].weight.grad = sentinel
    x, y = _batch(2)
    outs = []
    for seed in (7, 7, 8):
        attack = APGD(net, 0.03, bounds=(0.0, 1.0), num_steps=4, num_restarts=2)
        attack.set_random_state(seed)
        with torch.no_grad():
            outs.append(attack(x, y))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert net.training and net.features[0].weight.requires_grad and not net.fc.weight.requires_grad
    assert net.features[0].weight.grad is sentinel and net.fc.bias.grad is None


def test_state_restored_when_raising():
    net = SmallCNN(2, 1, 3).train()

    def bad_loss(logits, labels):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        APGD(net, 0.03, bounds=(0.0, 1.0), loss=bad_loss)(*_batch(2))
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_early_stop_and_targeted():
    torch.manual_seed(0)
    net = CountingNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 4)).eval())
    x, y = _batch(2, 8)
    target = (y + 1) % 4
    adv = APGD(net, 0.5, bounds=(0.0, 1.0), num_steps=20, targeted=True, early_stop=True)(x, target)
    with torch.no_grad():
        assert bool((net(adv).argmax(1) == target).all())
    assert net.seen < 8 * 20  # finished samples left the batch
    adv_dlr = APGD(net, 0.5, bounds=(0.0, 1.0), num_steps=20, targeted=True, loss=targeted_dlr_loss)(x, target)
    with torch.no_grad():
        assert bool((net(adv_dlr).argmax(1) == target).all())


def test_restarts_only_add_successes():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).eval()
    x, y = _batch(2, 8)
    fooled = []
    for restarts in (1, 3):
        attack = APGD(net, 0.02, bounds=(0.0, 1.0), num_steps=3, num_restarts=restarts)
        attack.set_random_state(3)
        with torch.no_grad():
            fooled.append(is_adversarial(net(attack(x, y)), y))
    assert bool((fooled[1] | ~fooled[0]).all())


@pytest.mark.parametrize("lp,eps", [("inf", 4 / 255), (2, 0.5)])
def test_stronger_than_pgd_and_matches_torchattacks(pneumonia, pneumonia_model, lp, eps):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = pneumonia["test_images"][:128], pneumonia["test_labels"][:128]

    def robust_acc(adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((pneumonia_model(adv).argmax(1) == y).float().mean())

    ours = robust_acc(APGD(pneumonia_model, eps, lp=lp, num_steps=10, bounds=(0.0, 1.0))(x, y))
    pgd = robust_acc(PGD(pneumonia_model, eps, lp=lp, num_steps=10, bounds=(0.0, 1.0))(x, y))
    norm = "Linf" if lp == "inf" else "L2"
    peer = robust_acc(torchattacks.APGD(pneumonia_model, norm=norm, eps=eps, steps=10, seed=0)(x, y))
    with torch.no_grad():
        assert ours < robust_acc(x) - 0.1  # the budget matters on this model: the comparison means something
    assert ours <= pgd + 0.01
    assert abs(ours - peer) <= 0.025


class _ReferenceStart(APGD):
    """APGD drawing its random start as torchattacks' APGD does with ``seed=0``."""

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        self._generator = torch.Generator(device=images.device).manual_seed(0)
        return super().perturb(images, labels, eps)


@pytest.mark.parametrize("lp,eps", [("inf", 4 / 255), (2, 0.3)])
def test_same_iterates_as_reference_from_same_start(pneumonia, pneumonia_model, lp, eps):
    """From the same random start, our batched APGD retraces the authors' algorithm (as packaged by torchattacks):
    the same samples are fooled, at the same points."""
    torchattacks = pytest.importorskip("torchattacks")
    x = pneumonia["test_images"][:64]
    with torch.no_grad():
        y = pneumonia_model(x).argmax(1)  # every sample starts correct, so the reference attacks the whole batch
    ours = _ReferenceStart(pneumonia_model, eps, lp=lp, num_steps=10, bounds=(0.0, 1.0))(x, y)
    norm = "Linf" if lp == "inf" else "L2"
    ref = torchattacks.APGD(pneumonia_model, norm=norm, eps=eps, steps=10, seed=0)(x, y)
    with torch.no_grad():
        fooled, fooled_ref = is_adversarial(pneumonia_model(ours), y), is_adversarial(pneumonia_model(ref), y)
    assert int(fooled.sum()) >= 8 and torch.equal(fooled, fooled_ref)
    same = (ours[fooled] - ref[fooled]).flatten(1).abs().amax(1) < 1e-5
    assert float(same.float().mean()) >= 0.95


def test_dlr_losses():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    y = torch.tensor([0, 0])
    # correct sample: -(3 - 1) / (3 - 0); misclassified: -(0 - 2) / (2 - 0)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-2 / 3, 1.0]))
    assert torch.allclose(dlr_loss(z * 5 + 2, y), dlr_loss(z, y), atol=1e-6)  # shift and scale invariant
    t = torch.tensor([1, 1])
    assert torch.allclose(targeted_dlr_loss(z, t), torch.tensor([2 / 3.5, -1 / 2.5]))
    with pytest.raises(ValueError, match="at least 3"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 4"):
        targeted_dlr_loss(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_checkpoints():
    assert apgd_checkpoints(100) == {21: 22, 40: 19, 56: 16, 69: 13, 79: 10, 86: 7, 92: 6, 98: 6}
    assert apgd_checkpoints(1) == {0: 1}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": 0.1, "num_steps": 0}, "num_steps"),
        ({"eps": 0.1, "num_restarts": 0}, "num_restarts"),
        ({"eps": 0.1, "bounds": (1.0, 0.0)}, "bounds"),
        ({"eps": 0.1, "lp": 1}, "lp"),
        ({"eps": 0.1, "rho": 0.0}, "rho"),
        ({"eps": 0.1, "rho": 1.5}, "rho"),
        ({"eps": 0.1, "momentum": 2.0}, "momentum"),
        ({"eps": 0.1, "loss": "ce"}, "loss"),
    ],
)
def test_ill_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        APGD(SmallCNN(2, 1, 3), **kwargs)


def test_bad_inputs():
    attack = APGD(SmallCNN(2, 1, 3), 0.03, bounds=(0.0, 1.0), num_steps=1)
    x, y = _batch(2)
    with pytest.raises(ValueError, match="outside bounds"):
        attack(x + 2, y)
    with pytest.raises(ValueError, match="out of range"):
        attack(x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="at least 3"):
        APGD(SmallCNN(2, 1, 2), 0.03, bounds=(0.0, 1.0), loss=dlr_loss, num_steps=1)(x, y % 2)
