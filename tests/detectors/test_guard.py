# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch

from monai_robust.detectors.deep_features import DeepFeatureDetector
from monai_robust.detectors.guard import DetectorGuard
from tests.detectors.conftest import SMALL_LAYERS


@pytest.fixture(scope="module")
def fitted(pneumonia, pneumonia_model, pneumonia_pgd):
    det = DeepFeatureDetector(pneumonia_model, SMALL_LAYERS).fit(pneumonia_pgd["clean"][:100], pneumonia_pgd["adv"][:100])
    return det, pneumonia["val_images"][:400]


@pytest.mark.parametrize("fpr", [0.05, 0.1, 0.2])
def test_fpr_on_clean_calibration_set(fpr, fitted):
    det, clean = fitted
    calib, held_out = clean[:200], clean[200:]
    guard = DetectorGuard(det, fpr=fpr).calibrate(calib)
    with torch.no_grad():
        rate = float(guard(calib)["adversarial_suspected"].float().mean())
        held = float(guard(held_out)["adversarial_suspected"].float().mean())
    k = math.ceil(201 * (1 - fpr) - 1e-9)  # the conformal rank: at most 200 - k calibration images above it
    assert rate <= (200 - k) / 200 + 1e-6 <= fpr
    assert float(guard.calibration_fpr) == pytest.approx(rate)
    sd = 3 * math.sqrt(fpr * (1 - fpr) / 200)  # binomial sampling error on 200 new clean images
    assert abs(held - fpr) < sd + 1 / 200


@pytest.mark.parametrize("seed", range(4))
def test_held_out_fpr_on_real_images_within_interval(seed, fitted, pneumonia):
    """Real PneumoniaMNIST clean images (validation + the test images the detector was not fitted on, 948), split
    at random per seed: 300 calibrate the guard at 5 %, the other 648 measure its rate, whose exact interval meets
    the 99 % range the guard promises for a guard calibrated on 300 images."""
    det, _ = fitted
    pool = torch.cat([pneumonia["val_images"], pneumonia["test_images"][200:]])
    perm = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
    guard = DetectorGuard(det, fpr=0.05).calibrate(pool[perm[:300]])
    out = guard.held_out_fpr(pool[perm[300:]], confidence=0.99)
    assert out["n"] == pool.shape[0] - 300 and out["calibration_size"] == 300
    assert out["interval"][0] <= out["fpr"] <= out["interval"][1]
    assert out["interval"][0] <= out["fpr_range"][1] and out["fpr_range"][0] <= out["interval"][1]


def test_verdicts_flag_attacks_and_round_trip(fitted, pneumonia_pgd):
    det, clean = fitted
    guard = DetectorGuard(det).calibrate(clean[:200])
    out = guard(pneumonia_pgd["adv"][100:])
    assert out["adversarial_suspected"].dtype == torch.bool
    assert set(out) == {"adversarial_suspected", "score", "threshold"}
    assert float(out["adversarial_suspected"].float().mean()) > 0.8  # TPR at 5 % FPR on PGD 16/255
    verdicts = guard.verdicts(pneumonia_pgd["adv"][100:103])
    assert len(verdicts) == 3 and isinstance(verdicts[0]["adversarial_suspected"], bool)
    assert verdicts[0]["threshold"] == pytest.approx(float(guard.threshold))
    fresh = DetectorGuard(DeepFeatureDetector(det.network, SMALL_LAYERS))
    fresh.load_state_dict(guard.state_dict())
    assert fresh.verdicts(pneumonia_pgd["adv"][100:103]) == verdicts


def test_bad_use(fitted):
    det, clean = fitted
    for fpr in (0.0, 1.0, -0.1, "5%"):
        with pytest.raises(ValueError, match="fpr"):
            DetectorGuard(det, fpr=fpr)
    with pytest.raises(ValueError, match="Detector"):
        DetectorGuard(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="at least 19"):
        DetectorGuard(det, fpr=0.05).calibrate(clean[:18])
    with pytest.raises(RuntimeError, match="fit"):
        DetectorGuard(det)(clean[:2])
    with pytest.raises(RuntimeError, match="fit"):
        DetectorGuard(DeepFeatureDetector(det.network, SMALL_LAYERS)).calibrate(clean[:40])
