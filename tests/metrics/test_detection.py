# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from monai_robust.metrics.detection import BASELINE, compare_detectors, confidence_scores, detection_summary


def test_confidence_scores_binary_heads_agree():
    z = torch.randn(6, 1)
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    assert torch.allclose(confidence_scores(z), confidence_scores(two))
    assert confidence_scores(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(0.5)


def test_compare_on_synthetic_scores():
    """A detector better than the baseline beats it; a useless one (random scores) does not; AUCs carry n."""
    g = torch.Generator().manual_seed(0)
    n, m = 300, 80
    clean_logits = torch.randn(n, 2, generator=g) * 3
    adv_logits = torch.randn(m, 2, generator=g) * 0.5  # adversarial: less confident
    good_c, good_a = torch.randn(n, generator=g), torch.randn(m, generator=g) + 4
    rand_c, rand_a = torch.randn(n, generator=g), torch.randn(m, generator=g)
    out = compare_detectors({"good": good_c, "random": rand_c}, {"good": good_a, "random": rand_a},
                            clean_logits, adv_logits, num_bootstrap=300)
    base = torch.cat([confidence_scores(clean_logits), confidence_scores(adv_logits)])
    y = torch.cat([torch.zeros(n), torch.ones(m)])
    assert out["baseline"]["name"] == BASELINE
    assert out["baseline"]["auc"] == pytest.approx(roc_auc_score(y, base))
    assert out["detectors"]["good"]["auc"] == pytest.approx(roc_auc_score(y, torch.cat([good_c, good_a])))
    assert out["detectors"]["good"]["verdict"] == "beats the baseline"
    assert out["detectors"]["random"]["verdict"] == "does not beat the baseline"
    assert "random" in out["summary"] and "good" not in out["summary"] and f"{n} clean / {m} adversarial" in out["summary"]
    for d in out["detectors"].values():
        assert d["n_clean"] == n and d["n_adversarial"] == m
        assert d["interval"][0] <= d["auc"] <= d["interval"][1]
    again = compare_detectors({"good": good_c, "random": rand_c}, {"good": good_a, "random": rand_a},
                              clean_logits, adv_logits, num_bootstrap=300)
    assert again == out  # seeded


def test_bad_input():
    z = torch.randn(4, 2)
    with pytest.raises(ValueError, match="different detectors"):
        compare_detectors({"a": torch.zeros(4)}, {"b": torch.zeros(4)}, z, z)
    with pytest.raises(ValueError, match="scored 3 clean"):
        compare_detectors({"a": torch.zeros(3)}, {"a": torch.zeros(4)}, z, z)
    with pytest.raises(ValueError, match="0 adversarial"):
        compare_detectors({"a": torch.zeros(4)}, {"a": torch.zeros(0)}, z, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="non-finite"):
        compare_detectors({"a": torch.tensor([0.0, 1, 2, float("nan")])}, {"a": torch.zeros(4)}, z, z)


def test_detection_summary_single_detector_and_empty_set():
    g = torch.Generator().manual_seed(1)
    z_c, z_a = torch.randn(50, 2, generator=g) * 3, torch.randn(20, 2, generator=g)
    s_c, s_a = torch.randn(50, generator=g), torch.randn(20, generator=g) + 3
    one = detection_summary(s_c, s_a, z_c, z_a, num_bootstrap=100)
    many = compare_detectors({"d": s_c}, {"d": s_a}, z_c, z_a, num_bootstrap=100)
    assert one["auc"] == many["detectors"]["d"]["auc"] and one["baseline"] == many["baseline"]
    assert one["n_clean"] == 50 and one["n_adversarial"] == 20 and one["verdict"] == "beats the baseline"
    empty = detection_summary(s_c, torch.zeros(0), z_c, torch.zeros(0, 2))
    assert empty["n_adversarial"] == 0 and "no AUC" in empty["note"] and empty["auc"] != empty["auc"]
