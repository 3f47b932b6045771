# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from monai_robust.detectors.adaptive import DetectorAwarePGD
from monai_robust.detectors.deep_features import DeepFeatureDetector
from tests.detectors.conftest import SMALL_LAYERS


@pytest.fixture(scope="module")
def setup(pneumonia_model, pneumonia_pgd):
    det = DeepFeatureDetector(pneumonia_model, SMALL_LAYERS).fit(pneumonia_pgd["clean"][:100], pneumonia_pgd["adv"][:100])
    x, y = pneumonia_pgd["clean"][100:164], pneumonia_pgd["labels"][100:164]
    return pneumonia_model, det, x, y


def test_weight_zero_is_pgd(setup):
    net, det, x, y = setup
    kw = {"num_steps": 5, "bounds": (0.0, 1.0)}
    a = DetectorAwarePGD(net, det, 8 / 255, weight=0.0, **kw).set_random_state(3)(x[:16], y[:16])
    b = PGD(net, 8 / 255, **kw).set_random_state(3)(x[:16], y[:16])
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("threshold", [None, 0.0])
def test_lowers_detector_score_within_budget(threshold, setup):
    net, det, x, y = setup
    eps = 16 / 255
    plain = PGD(net, eps, num_steps=10, bounds=(0.0, 1.0)).set_random_state(0)(x, y)
    adaptive = DetectorAwarePGD(net, det, eps, weight=10.0, threshold=threshold, num_steps=10, bounds=(0.0, 1.0))
    grads = [p.grad for p in net.parameters()]
    net.train()
    try:
        adv = adaptive.set_random_state(0)(x, y)
        assert net.training  # the attack restores the model's mode and its parameters' gradients
        assert all(p.grad is g for p, g in zip(net.parameters(), grads))
    finally:
        net.eval()
    assert float(lp_norm(adv - x, "inf").max()) <= eps + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert float(det(adv).mean()) < float(det(plain).mean()) - 1.0


def test_success_needs_evasion(setup):
    net, det, x, y = setup
    attack = DetectorAwarePGD(net, det, 4 / 255, threshold=-1e6)
    logits = torch.tensor([[0.0, 5.0]])
    attack._last_detector_score = torch.tensor([0.0])
    assert not bool(attack.success(logits, torch.tensor([0])))
    attack._last_detector_score = torch.tensor([-2e6])
    assert bool(attack.success(logits, torch.tensor([0])))


def test_bad_args(setup):
    net, det, _, _ = setup
    with pytest.raises(ValueError, match="weight"):
        DetectorAwarePGD(net, det, 0.01, weight=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        DetectorAwarePGD(net, det, 0.01, threshold=float("nan"))
    with pytest.raises(ValueError, match="fitted"):
        DetectorAwarePGD(net, DeepFeatureDetector(net, SMALL_LAYERS), 0.01)
