# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The evaluator's rows carry the metrics that do not reward collapse, their intervals, AUC n, the detector's
baseline comparison and a guard's false-positive rate on the clean test images."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from monai_robust.attacks.fgsm import FGSM
from monai_robust.detectors.deep_features import DeepFeatureDetector
from monai_robust.detectors.guard import DetectorGuard
from monai_robust.engines.evaluator import EvaluationOptions, ProbeOptions, RobustnessEvaluator
from monai_robust.report.table import format_table, summary_rows

OPTIONS = EvaluationOptions(noise_control=False)
NO_PROBES = ProbeOptions(enabled=False)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    return [{"image": x[i : i + batch_size], "label": y[i : i + batch_size]} for i in range(0, x.shape[0], batch_size)]


@pytest.fixture(scope="module")
def guard(pneumonia, pneumonia_model):
    """Deep-feature guard: fitted on 100 train images and their FGSM 8/255 versions, calibrated on 200 val images."""
    net = pneumonia_model
    x, y = pneumonia["train_images"][:100], pneumonia["train_labels"][:100]
    adv = FGSM(net, 8 / 255, bounds=(0.0, 1.0))(x, y)
    det = DeepFeatureDetector(net, ("features.1", "features.4", "features.7", "fc")).fit(x, adv)
    return DetectorGuard(det, fpr=0.1).calibrate(pneumonia["val_images"][:200])


def test_rows_carry_balanced_metrics_intervals_and_guard(pneumonia, pneumonia_model, guard):
    net = pneumonia_model
    x, y = pneumonia["test_images"][:256], pneumonia["test_labels"][:256]
    ev = RobustnessEvaluator("cpu", loader(x, y), net, {"fgsm": FGSM(net, bounds=(0.0, 1.0))}, [1 / 255, 4 / 255],
                             detector=guard, options=OPTIONS, probe_options=NO_PROBES, progress=False)
    ev.run()
    r = ev.results
    clean = r["clean"]
    with torch.no_grad():
        pred = net(x).argmax(1)
    assert clean["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y.numpy(), pred.numpy()))
    assert clean["auc_n"] == 256 and sum(clean["prediction_histogram"].values()) == 256
    assert not clean["collapse"]["collapsed"]
    for row in r["attacks"]["fgsm"]["results"]:
        iv = row["intervals"]
        for k in ("accuracy", "balanced_accuracy", "auc", "attack_success_rate"):
            assert iv[k][0] <= row[k] <= iv[k][1], k
        kept = row["performance_retained"]
        chance = 1 / clean["classes_present"]
        assert kept["balanced_accuracy"] == pytest.approx(
            (row["balanced_accuracy"] - chance) / (clean["balanced_accuracy"] - chance))
        det = row["detector"]
        assert det["n_clean"] == 256 and det["n_adversarial"] > 0 and det["baseline"]["name"] == "1 - max softmax"
        assert det["verdict"] in ("beats the baseline", "does not beat the baseline", "within noise of the baseline")
    g = r["detector"]["guard"]
    assert g["calibration_size"] == 200 and g["target_fpr"] == 0.1
    held = g["held_out"]
    assert held["n"] == 256 and held["interval"][0] <= held["fpr"] <= held["interval"][1]
    with torch.no_grad():
        assert held["false_positives"] == int(guard(x)["adversarial_suspected"].sum())
    text = format_table(r)
    assert "bal.acc" in text and "1-maxsoftmax AUC" in text
    assert "guard: target FPR 0.100 from 200 clean calibration images" in text and "256 clean test images" in text


class Constant(nn.Module):
    """Predicts class 1 for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1).mean(1) * self.w, torch.ones(x.shape[0]) + 0 * self.w], dim=1)


def test_constant_predictor_is_flagged(pneumonia):
    x, y = pneumonia["test_images"][:200], pneumonia["test_labels"][:200]
    net = Constant()
    ev = RobustnessEvaluator("cpu", loader(x, y), net, {"fgsm": FGSM(net, bounds=(0.0, 1.0))}, [4 / 255],
                             options=OPTIONS, probe_options=NO_PROBES, progress=False)
    ev.run()
    clean = ev.results["clean"]
    assert clean["accuracy"] == pytest.approx(float((y == 1).float().mean()))  # ~0.6: looks like a model
    assert clean["balanced_accuracy"] == 0.5 and clean["collapse"]["collapsed"]
    row = ev.results["attacks"]["fgsm"]["results"][0]
    assert row["collapse"]["collapsed"] and math.isnan(row["performance_retained"]["balanced_accuracy"])
    notes = [r["note"] for r in summary_rows(ev.results)]
    assert notes[0].startswith("COLLAPSED") and "never predicted: class 0" in notes[0]
