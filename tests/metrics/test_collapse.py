# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch

from monai_robust.metrics.clinical import clinical_metrics
from monai_robust.metrics.collapse import collapse_check, prediction_histogram
from monai_robust.metrics.robustness import performance_retained, retained


def test_flag_fires_on_constant_predictor_not_on_good_model(pneumonia, pneumonia_model):
    """PneumoniaMNIST test split (62.5 % pneumonia: balanced enough): a constant predictor is flagged, the trained
    CNN is not."""
    x, y = pneumonia["test_images"], pneumonia["test_labels"]
    with torch.no_grad():
        logits = pneumonia_model(x)
    good = collapse_check(logits, y, 2)
    assert good["balanced_enough"] and not good["collapsed"] and good["note"] == ""
    const = torch.zeros(len(y), 2)
    const[:, 1] = 1.0
    bad = collapse_check(const, y, 2, class_names=["normal", "pneumonia"])
    assert bad["collapsed"] and bad["dominant_class"] == 1 and bad["dominant_fraction"] == 1.0
    assert bad["unpredicted_classes"] == [0] and "never predicted: class normal" in bad["note"]


def test_balanced_enough_definition():
    y = torch.tensor([0] * 91 + [1] * 9)  # majority 91 % >= 90 %: cannot show a collapse
    out = collapse_check(torch.zeros(100, dtype=torch.long), y, 2)
    assert not out["balanced_enough"] and not out["collapsed"] and "cannot show a collapse" in out["note"]
    y = torch.tensor([0] * 89 + [1] * 11)
    assert collapse_check(torch.zeros(100, dtype=torch.long), y, 2)["collapsed"]
    assert not collapse_check(torch.zeros(100, dtype=torch.long), torch.zeros(100, dtype=torch.long), 2)["balanced_enough"]
    preds = torch.tensor([0] * 40 + [1] * 60)
    assert collapse_check(preds, torch.tensor([0] * 30 + [1] * 30 + [2] * 40), 3)["unpredicted_classes"] == [2]


def test_retained_of_collapsed_model_is_low():
    """A model that collapses under attack keeps its accuracy on an imbalanced set (the plain ratio says ~1) but
    retains nothing on balanced accuracy above chance."""
    y = torch.tensor([0] * 80 + [1] * 20)
    good = torch.zeros(100, 2)
    good[torch.arange(100), y] = 1.0
    good[:8] = torch.tensor([0.0, 1.0])  # 8 errors: accuracy 0.92, balanced accuracy 0.95
    collapsed = torch.zeros(100, 2)
    collapsed[:, 0] = 1.0  # predicts class 0 for all: accuracy 0.80
    clean = clinical_metrics(good, y, num_bootstrap=0)
    robust = clinical_metrics(collapsed, y, num_bootstrap=0)
    kept = retained(robust, clean, classes_present=2)
    assert kept["accuracy"] == pytest.approx(0.8 / 0.92)
    assert kept["balanced_accuracy"] == pytest.approx(0.0)
    assert kept["auc"] == pytest.approx(0.0)
    assert performance_retained(0.81, 0.9) == 0.9
    with pytest.raises(ValueError, match="above chance"):
        performance_retained(0.4, 0.5, chance=0.5)
    assert math.isnan(retained({"balanced_accuracy": 0.3}, {"balanced_accuracy": 0.4}, 2)["balanced_accuracy"])


def test_clinical_metrics_carry_the_new_fields():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (90,), generator=g)
    z = torch.randn(90, 3, generator=g) + torch.nn.functional.one_hot(y, 3) * 2
    m = clinical_metrics(z, y, ["a", "b", "c"], num_bootstrap=200)
    assert sum(m["prediction_histogram"].values()) == 90 and set(m["prediction_histogram"]) == {"a", "b", "c"}
    assert m["auc_n"] == 90 and m["classes_present"] == 3 and not m["collapse"]["collapsed"]
    for key in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"):
        lo, hi = m["intervals"][key]
        assert lo <= m[key] <= hi, key
    assert m["sensitivity"] == pytest.approx(m["balanced_accuracy"])


def test_histogram_bad_input():
    assert prediction_histogram(torch.tensor([[0.2], [-1.0], [3.0]]), 2) == [1, 2]
    with pytest.raises(ValueError, match="num_classes"):
        prediction_histogram(torch.tensor([0, 1]), 1)
    with pytest.raises(ValueError, match="out of range"):
        prediction_histogram(torch.tensor([0, 3]), 2)
    with pytest.raises(ValueError, match="threshold"):
        collapse_check(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, threshold=0.4)
