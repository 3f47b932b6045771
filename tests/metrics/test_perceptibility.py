# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch

from monai_robust.metrics.perceptibility import perceptibility, perturbation_norms, psnr, ssim, summarize
from monai_robust.utils.intensity import LinearIntensityMap


@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (3, 2, 8, 8, 8)])
def test_norms_and_physical_units(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    d = (torch.rand(shape, generator=g) - 0.5) * 0.02
    hu = LinearIntensityMap.from_window(-1000, 1000, units="HU")  # 1 model unit = 2000 HU
    out = perturbation_norms(x, x + d, hu)
    flat = d.reshape(shape[0], -1)
    assert torch.allclose(out["linf"], flat.abs().amax(1), atol=1e-6)
    assert torch.allclose(out["l2"], flat.norm(dim=1), atol=1e-6)
    assert torch.allclose(out["linf_physical"], out["linf"] * 2000, rtol=1e-5)
    assert torch.allclose(out["l2_physical"], out["l2"] * 2000, rtol=1e-5)


def test_psnr_known_value_and_identity():
    x = torch.zeros(2, 1, 8, 8)
    assert torch.allclose(psnr(x, x + 0.1, 1.0), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert torch.allclose(psnr(x, x + 0.1, 2.0), torch.tensor([20.0, 20.0]) + 20 * math.log10(2), atol=1e-4)
    assert torch.isinf(psnr(x, x, 1.0)).all()


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 1, 9, 9, 9)])
def test_ssim_2d_3d(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    assert torch.allclose(ssim(x, x, 1.0), torch.ones(2), atol=1e-5)
    small, large = ssim(x, x + 0.01 * torch.randn(shape, generator=g), 1.0), ssim(x, torch.rand(shape, generator=g), 1.0)
    assert (small > large).all() and (small <= 1).all()


def test_ssim_tiny_images_are_nan_and_all_measures():
    assert torch.isnan(ssim(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 1.0)).all()
    out = perceptibility(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1), 1.0)
    assert set(out) == {"linf", "l2", "psnr", "ssim"} and out["l2"].item() == pytest.approx(0.8)


def test_summarize_ignores_non_finite():
    assert summarize(torch.tensor([1.0, 3.0, math.inf, math.nan])) == {"n": 2, "mean": 2.0, "median": 2.0, "max": 3.0}
    assert summarize(torch.tensor([math.nan]))["n"] == 0


@pytest.mark.parametrize(
    "a, b, rng, match",
    [
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), 1.0, "one shape"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 0.0, "data_range"),
        (torch.zeros(4, 4), torch.zeros(4, 4), 1.0, "batches"),
    ],
)
def test_bad_input(a, b, rng, match):
    with pytest.raises(ValueError, match=match):
        psnr(a, b, rng)
