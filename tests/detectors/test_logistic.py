# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.detectors.logistic import LogisticRegression


def _data(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 100.0  # unequal scales, far from 0
    x[:, 0] += 2.5 * y  # only feature 0 carries the class
    return x, y


@pytest.mark.parametrize("hidden_units", [0, 8])
def test_fits_and_round_trips(hidden_units):
    x, y = _data()
    lr = LogisticRegression(hidden_units=hidden_units).fit(x, y)
    xt, yt = _data(seed=1)
    acc = ((lr(xt) > 0).long() == yt).float().mean()
    assert acc > 0.85
    fresh = LogisticRegression()  # the loaded state decides linear or hidden layer
    fresh.load_state_dict(lr.state_dict())
    torch.testing.assert_close(fresh(xt), lr(xt))


def test_linear_weights_follow_the_signal():
    x, y = _data()
    lr = LogisticRegression(hidden_units=0).fit(x, y)
    w = lr.weight.abs()
    assert w[0] > 5 * w[1] and w[0] > 5 * w[2]
    assert lr.mean.shape == (3,) and lr.std.shape == (3,)


def test_balanced_ignores_class_counts():
    x, y = _data(400)
    keep = (y == 0) | (torch.arange(400) < 80)  # 200 clean, 40 adversarial
    balanced = LogisticRegression(balanced=True).fit(x[keep], y[keep])
    plain = LogisticRegression(balanced=False).fit(x[keep], y[keep])
    assert float(balanced.bias) > float(plain.bias)  # the unweighted fit leans to the majority class


def test_constant_feature_is_harmless():
    x, y = _data()
    x[:, 2] = 3.0
    lr = LogisticRegression().fit(x, y)
    assert bool(torch.isfinite(lr(x)).all())


@pytest.mark.parametrize(
    "features, labels, match",
    [
        (torch.rand(10, 2), torch.zeros(10), "both classes"),
        (torch.rand(10, 2), torch.full((10,), 2), "0 \\(clean\\) or 1"),
        (torch.rand(10), torch.arange(10) % 2, "\\(N, F\\)"),
        (torch.full((10, 2), float("nan")), torch.arange(10) % 2, "NaN"),
    ],
)
def test_bad_fit(features, labels, match):
    with pytest.raises(ValueError, match=match):
        LogisticRegression().fit(features, labels)


def test_bad_args_and_use():
    for kwargs in ({"l2": -1.0}, {"max_iter": 0}, {"hidden_units": -2}, {"hidden_units": 1.5}):
        with pytest.raises(ValueError):
            LogisticRegression(**kwargs)
    with pytest.raises(RuntimeError, match="fit"):
        LogisticRegression()(torch.rand(2, 3))
    lr = LogisticRegression().fit(*_data())
    with pytest.raises(ValueError, match="as in fit"):
        lr(torch.rand(2, 4))
