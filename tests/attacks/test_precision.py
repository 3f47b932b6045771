# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Mixed precision that stays exact: the default selection, the fp32 switch, and the fp32 check and refinement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_robust.attacks import APGD, BIM, CW, FGSM, PGD, SMIA, AutoAttack, is_adversarial, precision
from monai_robust.attacks.base import attack_mode
from monai_robust.attacks.functional import lp_norm

EPS = {"inf": 0.05, 2: 0.5}


class LowPrecisionLies(nn.Module):
    """A linear classifier whose logits, only when computed in bf16 (under autocast), push class 1 up by 100: the
    bf16 iterations believe every sample of classes 0 and 2 broken at once, while the fp32 model does not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, 3)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))
        self.dtypes.append(z.dtype)
        if z.dtype != torch.float32:
            z = z + torch.tensor([0.0, 100.0, 0.0], dtype=z.dtype)
        return z


@pytest.fixture(autouse=True)
def _native(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here starts without the suite's fp32 pin, on a CPU that claims native bf16."""
    monkeypatch.delenv(precision.FP32_ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def _fp32_success(net: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return is_adversarial(net(adv).float(), y)


def test_default_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision.low_precision_dtype(None, "cpu") == torch.bfloat16
    assert precision.low_precision_dtype(False, "cpu") is None
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.low_precision_dtype(None, "cpu") is None  # no native bf16: fp32 by default
    assert precision.low_precision_dtype(True, "cpu") == torch.bfloat16  # asked for: emulated bf16
    monkeypatch.setenv(precision.FP32_ENV, "1")
    assert precision.low_precision_dtype(True, "cpu") is None


def test_cpu_flags_are_known_names() -> None:
    assert set(precision.cpu_bf16_flags()) <= {"avx512_bf16", "amx_bf16"}


def test_attacks_default_to_fp32_and_opt_in_to_mixed(tiny_net, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 unless asked: the +-0.005 agreement with fp32 did not hold on DenseNet121-2D (bench/README.md)."""
    net, (x, y) = tiny_net(2, 3), _data()
    fgsm = FGSM(net, 0.05, bounds=(0, 1))
    fgsm(x, y)
    assert fgsm.last_precision is None
    fgsm(x, y, amp=True)
    assert fgsm.last_precision is not None
    for attack in (BIM(net, 0.05, num_steps=2, bounds=(0, 1)),
                   PGD(net, 0.5, lp=2, num_steps=2, bounds=(0, 1)), APGD(net, 0.05, num_steps=2, bounds=(0, 1))):
        attack(x, y)
        assert attack.last_precision is None, attack
        attack(x, y, amp=True)  # the per-call switch
        assert attack.last_precision is not None and attack.last_precision.dtype == torch.bfloat16, attack
    fp32 = PGD(net, 0.05, num_steps=1, amp=False, bounds=(0, 1))  # the constructor's switch
    fp32(x, y)
    assert fp32.last_precision is None
    smia = SMIA(net, 0.05, num_steps=1, bounds=(0, 1))
    smia(x, y)
    assert smia.last_precision is None  # not checked in fp32: fp32 by default
    cw = CW(net, num_steps=2, binary_search_steps=1, bounds=(0, 1))
    cw(x, y)
    assert cw.last_precision is None
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    pgd = PGD(net, 0.05, num_steps=1, bounds=(0, 1))
    pgd(x, y)
    assert pgd.last_precision is None


def test_env_forces_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    net, (x, y) = LowPrecisionLies(), _data()
    ref = PGD(net, 0.05, num_steps=3, bounds=(0, 1), amp=False)
    ref.set_random_state(0)
    expected = ref(x, y)
    monkeypatch.setenv(precision.FP32_ENV, "1")
    attack = PGD(net, 0.05, num_steps=3, bounds=(0, 1), amp=True)
    attack.set_random_state(0)
    net.dtypes.clear()
    adv = attack(x, y)
    assert attack.last_precision is None and set(net.dtypes) == {torch.float32}
    assert torch.equal(adv, expected)


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda net, lp: FGSM(net, EPS[lp], lp=lp, bounds=(0, 1)),
        lambda net, lp: BIM(net, EPS[lp], lp=lp, num_steps=3, bounds=(0, 1)),
        lambda net, lp: PGD(net, EPS[lp], lp=lp, num_steps=3, bounds=(0, 1)),
        lambda net, lp: APGD(net, EPS[lp], lp=lp, num_steps=3, bounds=(0, 1)),
    ],
    ids=["FGSM", "BIM", "PGD", "APGD"],
)
@pytest.mark.parametrize("lp", ["inf", 2])
def test_counted_broken_is_broken_in_fp32(make, lp, early_stop: bool) -> None:
    """Where the bf16 iterations are wrong about success, the fp32 check catches it and refines in fp32; the
    reported success is the fp32 model's, and budget and bounds hold in fp32."""
    net, (x, y) = LowPrecisionLies(), _data()
    attack = make(net, lp)
    net.dtypes.clear()
    adv = attack(x, y, early_stop=early_stop, amp=True)
    report = attack.last_precision
    assert torch.bfloat16 in net.dtypes and torch.float32 in net.dtypes  # iterations in bf16, check in fp32
    assert report.n == len(y)
    if isinstance(attack, APGD) or (isinstance(attack, PGD) and not early_stop):  # fp32 iterations, not added ones
        assert report.refined == 0
    else:
        assert report.refined >= int((y != 1).sum()) - int(_fp32_success(net, x, y).sum())
    assert torch.equal(report.success, _fp32_success(net, adv, y))
    assert adv.dtype == torch.float32 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(lp_norm(adv - x, lp).max()) <= EPS[lp] * (1 + 1e-6)


def test_mixed_fgsm_never_weaker_than_fp32(tiny_net) -> None:
    for net in (LowPrecisionLies(), tiny_net(2, 3)):
        x, y = _data(48)
        fp32 = _fp32_success(net, FGSM(net, 0.05, bounds=(0, 1), amp=False)(x, y), y)
        attack = FGSM(net, 0.05, bounds=(0, 1), amp=True)
        mixed = _fp32_success(net, attack(x, y), y)
        assert torch.equal(attack.last_precision.success, mixed)
        assert bool((mixed | ~fp32).all()), "a sample fp32 FGSM breaks survived the mixed-precision FGSM"


def test_refinement_only_touches_samples_not_broken_in_fp32(tiny_net) -> None:
    net, (x, y) = tiny_net(2, 3), _data(32)
    attack = PGD(net, 0.1, num_steps=4, bounds=(0, 1), amp=True)
    attack.set_random_state(0)
    adv = attack(x, y)
    assert attack.last_precision.refined < len(y)  # broken in fp32 after bf16: not refined
    assert torch.equal(attack.last_precision.success, _fp32_success(net, adv, y))


@pytest.mark.parametrize("net_name", ["lies", "tiny"])
def test_autoattack_decides_in_fp32(tiny_net, net_name: str) -> None:
    """The ensemble iterates in bf16 but counts a sample broken only when the fp32 model is fooled."""
    net = LowPrecisionLies() if net_name == "lies" else tiny_net(2, 3)
    x, y = _data()
    aa = AutoAttack(net, 0.05, bounds=(0, 1), num_steps=2, num_queries=5, num_target_classes=2, amp=True)
    adv, result = aa.run(x, y)
    assert aa.last_precision is not None and aa.last_precision.dtype == torch.bfloat16
    assert aa.last_precision.checked == 0  # the ensemble decided every sample in fp32 already
    fp32 = _fp32_success(net, adv, y)
    assert torch.equal(aa.last_precision.success, fp32)
    assert torch.equal(result.robust, ~fp32)
    assert float(lp_norm(adv - x, "inf").max()) <= 0.05 * (1 + 1e-6)


class Counting(nn.Module):
    """Records, per forward: batch size, whether a gradient is taken, and whether autocast is on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return self.net(x)


@pytest.mark.parametrize("lp", ["inf", 2])
@pytest.mark.parametrize("steps", [2, 5, 10])
@pytest.mark.parametrize("make", [
    lambda net, lp, steps: APGD(net, EPS[lp], lp=lp, num_steps=steps, bounds=(0, 1)),
    lambda net, lp, steps: PGD(net, EPS[lp], lp=lp, num_steps=steps, bounds=(0, 1)),
], ids=["APGD", "PGD"])
def test_mixed_replaces_the_last_iterations(tiny_net, make, lp, steps: int) -> None:
    """Without early stop a mixed-precision APGD / PGD makes the fp32 attack's forward and backward passes, the last
    ceil(steps / 5) of them (APGD: the evaluations behind its last ceil(steps / 5) updates) in fp32, plus at most the
    fp32 check; the result is adversarial, inside the budget and the box as the fp32 model decides."""
    net, (x, y) = Counting(tiny_net(2, 3)), _data(32)
    attack = make(net, lp, steps)
    attack.set_random_state(0)
    attack(x, y, amp=False)
    fp32_calls, net.calls = net.calls, []
    attack.set_random_state(0)
    adv = attack(x, y, amp=True)
    report, tail = attack.last_precision, precision.fp32_steps(steps)
    iterations, check = net.calls[: len(fp32_calls)], net.calls[len(fp32_calls) :]
    assert [c[:2] for c in iterations] == [c[:2] for c in fp32_calls]  # same passes, same batch sizes
    assert not any(c[2] for c in fp32_calls)
    fp32_evals = tail + 1 if isinstance(attack, APGD) else tail  # APGD: the last iterate's value too
    assert [c[2] for c in iterations] == [True] * (len(iterations) - fp32_evals) + [False] * fp32_evals
    assert report.refined == 0
    assert [c[0] for c in check] == ([report.checked] if report.checked else [])
    assert not any(c[1] or c[2] for c in check)  # the check: one fp32 forward, no gradient
    if isinstance(attack, APGD):
        assert report.checked < len(y)  # APGD knows its fp32 verdict at most returned examples
    assert torch.equal(report.success, _fp32_success(net, adv, y))
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(lp_norm(adv - x, lp).max()) <= EPS[lp] * (1 + 1e-6)


@pytest.mark.parametrize("early_stop", [False, True])
def test_mixed_apgd_attacks_on_samples_bf16_wrongly_claims(early_stop: bool) -> None:
    """bf16 claims every class-0/2 sample broken at once, so its iterations are worthless there: the fp32
    iterations still attack every sample not broken in fp32 (with early stop: the claimed samples are checked at the
    switch and resumed from their state), and the reported success is the fp32 model's."""
    net, (x, y) = Counting(LowPrecisionLies()), _data(48)
    clean = int(_fp32_success(net, x, y).sum())
    attack = APGD(net, 0.05, num_steps=10, bounds=(0, 1), amp=True)
    adv = attack(x, y, early_stop=early_stop)
    mixed = _fp32_success(net, adv, y)
    assert torch.equal(attack.last_precision.success, mixed)
    assert int(mixed.sum()) > clean
    fp32_grads = [n for n, grad, autocast in net.calls if grad and not autocast]
    assert fp32_grads and max(fp32_grads) > int((y == 1).sum())  # claimed samples among those attacked in fp32


def test_autoattack_apgd_iterations_end_in_fp32() -> None:
    """In a mixed-precision AutoAttack, APGD-CE and APGD-T take fp32 gradients in their last iterations."""
    net = Counting(LowPrecisionLies())
    x, y = _data()
    aa = AutoAttack(net, 0.05, bounds=(0, 1), attacks=("apgd-ce", "apgd-t"), num_steps=5, num_target_classes=2, amp=True)
    aa.run(x, y)
    assert any(grad and not autocast for _, grad, autocast in net.calls)
    assert any(grad and autocast for _, grad, autocast in net.calls)


@pytest.mark.parametrize("early_stop", [False, True])
def test_iterate_runs_its_last_steps_in_fp32(tiny_net, early_stop: bool) -> None:
    """``iterate(fp32_last=k)``: the last k steps with autocast off; with early stop every sample comes back for
    the first fp32 step, so success is decided again in fp32."""
    net, (x, y) = Counting(tiny_net(2, 3)), _data(16)
    attack = PGD(net, 0.2, num_steps=4, bounds=(0, 1), early_stop=early_stop)
    with attack_mode(net, torch.bfloat16):
        adv = attack.iterate(x, y, eps=0.2, step_size=0.1, num_steps=4, random_init=False, fp32_last=2)
    autocast = [c[2] for c in net.calls]
    assert autocast == [True] * (len(autocast) - len([c for c in autocast if not c])) + [False] * autocast.count(False)
    first_fp32 = next(c for c in net.calls if not c[2])
    assert first_fp32[0] == len(y) and 1 <= autocast.count(False) <= 2
    assert float(lp_norm(adv - x, "inf").max()) <= 0.2 * (1 + 1e-6)
