# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import torch

from monai_robust.detectors import compare_detectors
from monai_robust.detectors.deep_features import DeepFeatureDetector
from tests.detectors.conftest import SMALL_LAYERS


def test_compare_on_real_detector(pneumonia_model, pneumonia_pgd):
    """Deep features on PGD 16/255 PneumoniaMNIST: fitted on 100 + 100, compared on the other 100 + successful."""
    x, adv, y = pneumonia_pgd["clean"], pneumonia_pgd["adv"], pneumonia_pgd["labels"]
    det = DeepFeatureDetector(pneumonia_model, SMALL_LAYERS).fit(x[:100], adv[:100])
    with torch.no_grad():
        ok = pneumonia_model(adv[100:]).argmax(1) != y[100:]
        out = compare_detectors({"deep_features": det(x[100:])}, {"deep_features": det(adv[100:][ok])},
                                pneumonia_model(x[100:]), pneumonia_model(adv[100:][ok]), num_bootstrap=200)
    assert out["n_adversarial"] == int(ok.sum()) > 10
    assert out["detectors"]["deep_features"]["auc"] > 0.9
