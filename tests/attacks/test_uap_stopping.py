# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The running estimate that decides when a UAP fit checks its exact stopping rate."""

from __future__ import annotations

import pytest

from monai_robust.attacks.uap_stopping import RunningRate


def test_due_once_the_window_estimate_reaches_the_rate():
    r = RunningRate(0.75, window=8)
    assert not r.update(4, 4) and r.estimate is None  # fewer than window images: no estimate yet
    assert r.update(3, 4) and r.estimate == pytest.approx(7 / 8)
    assert not r.update(4, 4)  # due again only after window new images
    assert r.update(4, 4) and r.estimate == pytest.approx(1.0)  # the oldest minibatches left the window


def test_window_slides_and_low_estimates_never_trigger():
    r = RunningRate(0.5, window=4)
    for _ in range(5):
        assert not r.update(1, 4)  # 0.25 per minibatch
    assert r.estimate == pytest.approx(0.25)


def test_margin_and_checked():
    r = RunningRate(0.8, window=4, margin=0.1)
    assert r.update(3, 4)  # 0.75 >= 0.8 - 0.1
    r2 = RunningRate(0.8, window=4)
    r2.update(0, 2)
    r2.checked()  # an exact check elsewhere: the next one waits for window more images
    assert not r2.update(4, 2) and r2.update(4, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"window": 0}, "window"), ({"window": 2.5}, "window"), ({"target_rate": 0.0}, "target_rate"),
     ({"margin": -0.1}, "margin")],
)
def test_bad_arguments(kwargs, match):
    args = {"target_rate": 0.8, "window": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        RunningRate(**args)
