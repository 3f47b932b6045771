# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.fixed_perturbation import broadcast_delta, noise_control, perturb_fraction
from monai_robust.attacks.functional import lp_norm

BOUNDS = (0.0, 1.0)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
@pytest.mark.parametrize("lp", [2, "inf"])
def test_noise_control_same_norm(kind, lp):
    delta = torch.randn(1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.1
    noise = noise_control(delta, kind, lp, torch.Generator().manual_seed(1))
    assert noise.shape == delta.shape
    assert float(lp_norm(noise[None], lp)) == pytest.approx(float(lp_norm(delta[None], lp)), rel=1e-5)
    assert not torch.allclose(noise, delta)
    with pytest.raises(ValueError, match="kind"):
        noise_control(delta, "salt")


def test_perturb_fraction():
    x, d = torch.full((64, 1, 4, 4), 0.5), torch.full((1, 4, 4), 0.7)
    out, mask = perturb_fraction(x, d, 0.5, BOUNDS, torch.Generator().manual_seed(0))
    assert torch.equal(out[mask], torch.ones_like(out[mask])) and torch.equal(out[~mask], x[~mask])
    assert 16 < int(mask.sum()) < 48
    assert not perturb_fraction(x, d, 0.0, BOUNDS)[1].any() and perturb_fraction(x, d, 1.0, BOUNDS)[1].all()
    with pytest.raises(ValueError, match="fraction"):
        perturb_fraction(x, d, 1.5, BOUNDS)


def test_broadcast_delta():
    assert broadcast_delta(torch.zeros(1, 8, 8), (4, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert broadcast_delta(torch.zeros(1, 1, 8, 8, dtype=torch.int64), (2, 1, 8, 8)).is_floating_point()
    with pytest.raises(ValueError, match=r"\(2, 1, 9, 9\)"):
        broadcast_delta(torch.zeros(1, 8, 8), (2, 1, 9, 9))
