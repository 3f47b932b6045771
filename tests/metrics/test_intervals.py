# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch
from scipy.special import betainc as scipy_betainc
from scipy.stats import beta, binomtest

from monai_robust.metrics.balanced import bootstrap_intervals
from monai_robust.metrics.intervals import (
    beta_quantile,
    betainc,
    binomial_interval,
    percentile_interval,
    stratified_bootstrap_indices,
)


@pytest.mark.parametrize("a,b,x", [(1, 1, 0.3), (3.5, 200.2, 0.02), (50, 2, 0.97), (0.5, 0.5, 0.1), (600, 25, 0.95)])
def test_betainc_and_quantile_match_scipy(a, b, x):
    assert betainc(a, b, x) == pytest.approx(float(scipy_betainc(a, b, x)), abs=1e-10)
    assert beta_quantile(0.975, a, b) == pytest.approx(float(beta.ppf(0.975, a, b)), abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (10, 200), (600, 624), (3, 3), (5000, 10000)])
@pytest.mark.parametrize("method", ["exact", "wilson"])
def test_binomial_interval_matches_scipy(k, n, method):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method=method)
    lo, hi = binomial_interval(k, n, 0.95, method)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    assert lo <= k / n <= hi


@pytest.mark.parametrize("method,low", [("exact", 0.95), ("wilson", 0.93)])
def test_binomial_coverage(method, low):
    """Simulated rates (seeded): the exact interval covers the truth in >= 95 % of draws, Wilson in about 95 %."""
    g = torch.Generator().manual_seed(0)
    hits = 0
    trials = 400
    for _ in range(trials):
        p = float(torch.rand(1, generator=g)) * 0.3 + 0.02
        n = 60
        k = int((torch.rand(n, generator=g) < p).sum())
        lo, hi = binomial_interval(k, n, method=method)
        hits += lo <= p <= hi
    assert low - 0.03 <= hits / trials <= 1.0


def test_stratified_bootstrap_keeps_class_counts_and_seed():
    y = torch.tensor([0] * 7 + [1] * 3 + [2] * 1)
    idx = stratified_bootstrap_indices(y, 50, seed=3)
    assert idx.shape == (50, 11)
    assert (torch.stack([torch.bincount(y[r], minlength=3) for r in idx]) == torch.tensor([7, 3, 1])).all()
    assert torch.equal(idx, stratified_bootstrap_indices(y, 50, seed=3))
    assert not torch.equal(idx, stratified_bootstrap_indices(y, 50, seed=4))


def test_bootstrap_interval_coverage_of_balanced_accuracy_and_auc():
    """Simulated binary task with a known population balanced accuracy and AUC: the 95 % stratified-bootstrap
    intervals over 100 seeded test sets of 200 images cover them roughly 95 % of the time."""
    # scores: N(0, 1) for class 0, N(1, 1) for class 1; threshold 0.5 -> population BA = Phi(0.5); AUC = Phi(1/sqrt(2))
    phi = torch.distributions.Normal(0.0, 1.0).cdf
    true_ba, true_auc = float(phi(torch.tensor(0.5))), float(phi(torch.tensor(1 / math.sqrt(2))))
    g = torch.Generator().manual_seed(1)
    cover_ba = cover_auc = 0
    trials = 100
    for t in range(trials):
        y = (torch.arange(200) < 70).long()  # 35 % positives
        s = torch.randn(200, generator=g) + y - 0.5  # logit = score - 0.5: predicts 1 where score > 0.5
        ci = bootstrap_intervals(s[:, None], y, num_samples=400, seed=t)
        cover_ba += ci["balanced_accuracy"][0] <= true_ba <= ci["balanced_accuracy"][1]
        cover_auc += ci["auc"][0] <= true_auc <= ci["auc"][1]
    assert 0.85 <= cover_ba / trials <= 1.0
    assert 0.85 <= cover_auc / trials <= 1.0


def test_percentile_interval_and_bad_input():
    assert percentile_interval(torch.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in percentile_interval(torch.tensor([math.nan])))
    with pytest.raises(ValueError, match="n > 0"):
        binomial_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        binomial_interval(5, 4)
    with pytest.raises(ValueError, match="method"):
        binomial_interval(1, 4, method="normal")
    with pytest.raises(ValueError, match="confidence"):
        binomial_interval(1, 4, confidence=95)
    with pytest.raises(ValueError, match="num_samples"):
        stratified_bootstrap_indices(torch.tensor([0, 1]), num_samples=0)
