# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from monai_robust.metrics.balanced import auc_rows, balanced_accuracy, bootstrap_intervals, macro_auc


def _data(n: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g) + 1.5 * torch.nn.functional.one_hot(y, c)
    return z, y


@pytest.mark.parametrize("c", [2, 3, 5])
def test_match_sklearn(c):
    z, y = _data(300, c)
    assert balanced_accuracy(z, y) == pytest.approx(balanced_accuracy_score(y.numpy(), z.argmax(1).numpy()))
    p = torch.softmax(z.double(), 1).numpy()
    ref = roc_auc_score(y.numpy(), p[:, 1]) if c == 2 else roc_auc_score(y.numpy(), p, multi_class="ovr")
    m = macro_auc(z, y)
    assert m["auc"] == pytest.approx(ref) and m["n"] == 300 and sum(m["n_per_class"]) == 300 and m["note"] == ""


def test_single_logit_head_and_ties():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 2, (80,), generator=g)
    f = (torch.randn(80, generator=g) + y).round()  # many tied scores
    assert macro_auc(f[:, None], y)["auc"] == pytest.approx(roc_auc_score(y.numpy(), f.numpy()))
    assert balanced_accuracy(f[:, None], y) == pytest.approx(balanced_accuracy_score(y.numpy(), (f > 0).long().numpy()))
    s = torch.randint(0, 4, (3, 50), generator=g).float()
    pos = torch.randint(0, 2, (3, 50), generator=g).bool()
    assert auc_rows(s, pos).tolist() == pytest.approx([roc_auc_score(pos[i], s[i]) for i in range(3)])


def test_constant_predictor_scores_chance():
    y = torch.tensor([0] * 90 + [1] * 10)
    assert balanced_accuracy(torch.zeros(100, dtype=torch.long), y) == 0.5  # accuracy would be 0.9
    y3 = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    assert balanced_accuracy(torch.full((100,), 2), y3) == pytest.approx(1 / 3)
    assert macro_auc(torch.zeros(100, 3), y3)["auc"] == pytest.approx(0.5)


def test_absent_class_is_named_not_silent():
    z, y = _data(120, 4)
    y[y == 3] = 0  # class 3 absent
    m = macro_auc(z, y)
    assert m["classes_used"] == [0, 1, 2] and "class 3 absent" in m["note"] and math.isfinite(m["auc"])
    assert m["auc"] == pytest.approx(sum(m["per_class"][:3]) / 3) and math.isnan(m["per_class"][3])
    one = macro_auc(z, torch.zeros(120, dtype=torch.long))
    assert math.isnan(one["auc"]) and "only class 0" in one["note"]
    assert all(math.isnan(v) for v in bootstrap_intervals(z, torch.zeros(120, dtype=torch.long), 20)["auc"])
    binary = macro_auc(torch.randn(10, 2), torch.ones(10, dtype=torch.long))
    assert math.isnan(binary["auc"]) and "only class 1" in binary["note"]


def test_bootstrap_intervals_seeded_and_contain_estimate():
    z, y = _data(200, 3, seed=5)
    a, b = bootstrap_intervals(z, y, 300, seed=7), bootstrap_intervals(z, y, 300, seed=7)
    assert a == b
    assert a["balanced_accuracy"][0] <= balanced_accuracy(z, y) <= a["balanced_accuracy"][1]
    assert a["auc"][0] <= macro_auc(z, y)["auc"] <= a["auc"][1]
    assert a["balanced_accuracy"] != bootstrap_intervals(z, y, 300, seed=8)["balanced_accuracy"]


def test_bad_input():
    with pytest.raises(ValueError, match="N=3"):
        balanced_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        macro_auc(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="logits"):
        macro_auc(torch.zeros(3), torch.tensor([0, 1, 0]))
