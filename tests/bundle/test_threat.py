# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Budgets in stored units or as ζ, and the stored range inferred from data when a bundle declares none."""

from __future__ import annotations

import pytest
import torch

from monai_robust.bundle.threat import infer_stored_range, stored_budget


def test_infer_stored_range():
    assert infer_stored_range(torch.tensor([[0.0, 17.0, 255.0]]))[0] == (0.0, 255.0)
    assert infer_stored_range(torch.tensor([[0.0, 300.0, 4000.0]]))[0] == (0.0, 4095.0)
    assert infer_stored_range(torch.tensor([[-1000.0, 300.0]]))[0] == (-32768.0, 32767.0)
    (lo, hi), how = infer_stored_range(torch.tensor([[0.25, 0.5]]))
    assert (lo, hi) == (0.25, 0.5) and "observed" in how


def test_stored_budget_eps_and_zeta():
    x = torch.full((4, 1, 8, 8), 100.0)
    assert stored_budget([4, 1], None, x, (0.0, 255.0)) == ([1.0, 4.0], ["1 stored units", "4 stored units"])
    eps, how = stored_budget(None, [0.02], x, (0.0, 255.0))
    assert eps == [pytest.approx(2.0)] and "zeta=0.02" in how[0]
    with pytest.raises(ValueError, match="either"):
        stored_budget([1], [0.1], x, (0.0, 255.0))
    with pytest.raises(ValueError, match="outside"):
        stored_budget([300], None, x, (0.0, 255.0))
