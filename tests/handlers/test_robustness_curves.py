# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Robustness results as curves over ε (the trackers' input) and the MLflow handler's argument check."""

from __future__ import annotations

import math

import pytest

from monai_robust.handlers import RobustnessMLFlowHandler, robustness_curves, tracking_name

RESULTS = {
    "attacks": {
        "PGD-10": {
            "results": [
                {"eps": 0.03, "status": "ok", "accuracy": 0.2, "auc": 0.4, "detector": {"auc": 0.9, "n_clean": 8, "n_adversarial": 6}},
                {"eps": 0.01, "status": "ok", "accuracy": 0.6, "auc": math.nan, "detector": {"auc": math.nan, "n_clean": 8, "n_adversarial": 0}},
                {"eps": 0.02, "status": "failed", "accuracy": 0.5},
            ]
        },
        "CW": {"results": [{"eps": math.inf, "status": "ok", "accuracy": 0.0}, {"eps": None, "status": "ok", "accuracy": 0.1}]},
        "broken": {"results": [{"eps": 0.01, "status": "failed"}]},
    }
}


def test_curves_sorted_by_eps_ok_and_finite_only() -> None:
    curves = robustness_curves(RESULTS)
    assert set(curves) == {"PGD-10", "CW"}  # an attack without a successful run is left out
    pgd = curves["PGD-10"]
    assert [eps for eps, _ in pgd] == [0.01, 0.03]  # ascending; the failed run at 0.02 is left out
    assert pgd[0][1] == {"accuracy": 0.6, "detector_n_clean": 8.0, "detector_n_adversarial": 0.0}  # no NaN AUC
    assert pgd[1][1] == {"accuracy": 0.2, "auc": 0.4, "detector_auc": 0.9, "detector_n_clean": 8.0, "detector_n_adversarial": 6.0}
    assert [eps for eps, _ in curves["CW"]] == [None, None]  # unbounded: no finite ε
    assert robustness_curves({}) == {}


def test_tracking_name_and_handler_arguments() -> None:
    assert tracking_name("PGD-10 (L∞)@eps=1") == "PGD-10 _L___eps_1"
    assert tracking_name("uap:name/acc") == "uap:name/acc"
    with pytest.raises(ValueError, match="do not pass epoch_logger"):
        RobustnessMLFlowHandler(epoch_logger=lambda engine: None)
