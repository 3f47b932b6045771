# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from monai_robust.metrics.clinical import class_probabilities, clinical_metrics, roc_auc, sensitivity_specificity


def test_binary_matches_sklearn_and_counts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 2, generator=g)
    labels = torch.randint(0, 2, (50,), generator=g)
    m = clinical_metrics(logits, labels, class_names=["normal", "pneumonia"])
    p1 = torch.softmax(logits, 1)[:, 1]
    assert m["auc"] == pytest.approx(roc_auc_score(labels.numpy(), p1.numpy()))
    pred = logits.argmax(1)
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    assert m["sensitivity"] == pytest.approx(tp / int((labels == 1).sum()))
    assert m["specificity"] == pytest.approx(tn / int((labels == 0).sum()))
    assert m["accuracy"] == pytest.approx((tp + tn) / 50)
    assert set(m["per_class"]) == {"normal", "pneumonia"}
    assert m["per_class"]["normal"]["sensitivity"] == pytest.approx(m["specificity"])
    assert m["per_class"]["pneumonia"]["n"] == int((labels == 1).sum())


def test_single_logit_head_equals_two_logits():
    f = torch.tensor([[-2.0], [0.5], [1.0], [-0.1]])
    y = torch.tensor([0, 1, 0, 1])
    two = torch.cat([torch.zeros_like(f), f], 1)
    assert clinical_metrics(f, y) == clinical_metrics(two, y)
    assert torch.allclose(class_probabilities(f), torch.softmax(two, 1))


def test_multiclass_one_vs_rest():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(60, 3, generator=g)
    labels = torch.arange(60) % 3
    out = roc_auc(logits, labels)
    probs = torch.softmax(logits, 1).numpy()
    expected = roc_auc_score(labels.numpy(), probs, multi_class="ovr", average=None)
    assert out["per_class"] == pytest.approx(list(expected))
    assert out["auc"] == pytest.approx(float(expected.mean()))
    ss = sensitivity_specificity(logits, labels)
    assert len(ss["sensitivity"]) == 3 and all(0 <= v <= 1 for v in ss["specificity"])


def test_absent_class_gives_nan():
    out = roc_auc(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 0]))
    assert math.isnan(out["auc"])


@pytest.mark.parametrize(
    "logits, labels, kwargs, match",
    [
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), {}, "out of range"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), {}, "N=3"),
        (torch.zeros(3), torch.tensor([0, 1, 0]), {}, r"\(N, classes\)"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 0]), {"class_names": ["a"]}, "class_names"),
        (torch.zeros(3, 2), torch.tensor([0.5, 1, 0]), {}, "integral"),
    ],
)
def test_bad_input(logits, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        clinical_metrics(logits, labels, **kwargs)
