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
    assert r.update(4, 4) and r.estimate == pytest.approx(7 / 8)  # still due: no check was made
    r.checked()  # a check that did not stop the fit: the next one waits for 2 * window new images
    assert [r.update(4, 4) for _ in range(4)] == [False, False, False, True]
    r.checked()  # then 4 * window
    assert sum(r.update(4, 4) for _ in range(8)) == 1


def test_window_slides_and_low_estimates_never_trigger():
    r = RunningRate(0.5, window=4)
    for _ in range(5):
        assert not r.update(1, 4)  # 0.25 per minibatch
    assert r.estimate == pytest.approx(0.25)


def test_margin_and_reset():
    r = RunningRate(0.8, window=4, margin=0.1)
    assert r.update(3, 4)  # 0.75 >= 0.8 - 0.1
    r.checked()
    r.reset()  # a new fit: no estimate, the first gap again
    assert r.estimate is None and not r.update(2, 2) and r.update(2, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"window": 0}, "window"), ({"window": 2.5}, "window"), ({"target_rate": 0.0}, "target_rate"),
     ({"margin": -0.1}, "margin")],
)
def test_bad_arguments(kwargs, match):
    args = {"target_rate": 0.8, "window": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        RunningRate(**args)
