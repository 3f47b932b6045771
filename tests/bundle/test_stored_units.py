# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The stored-units split: re-implementations match MONAI to 1e-5, gradients agree with finite differences, the
split point, straight-through fallback with a warning, random transforms refused."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import (
    CastToType,
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    GaussianSmooth,
    LoadImaged,
    NormalizeIntensity,
    NormalizeIntensityd,
    RandGaussianNoised,
    Resized,
    ScaleIntensity,
    ScaleIntensityd,
    ScaleIntensityRange,
)

from monai_robust.bundle.stored_units import NormalizeIntensityOp, StoredUnitsModel, gradient_error, split_preprocessing


def _images(seed: int = 0, zeros: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 8, 8, generator=g) * 250 + 2  # no ties, so min/max have a gradient
    if zeros:
        x[:, :, :2] = 0
    return x


def _monai(t, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.as_tensor(t(xi.clone())).as_subclass(torch.Tensor) for xi in x])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nonzero": True, "channel_wise": True},
        {"nonzero": True},
        {"channel_wise": True},
        {},
        {"subtrahend": [1.0, 2.0, 3.0], "divisor": [2.0, 3.0, 4.0], "channel_wise": True},
        {"subtrahend": 10.0, "divisor": 5.0, "nonzero": True},
    ],
)
def test_normalize_matches_monai(kwargs):
    x = _images()
    t = NormalizeIntensity(**kwargs)
    assert torch.allclose(NormalizeIntensityOp.from_monai(t)(x), _monai(t, x), atol=1e-5)


def test_normalize_constant_image_like_monai():
    x = torch.full((1, 3, 4, 4), 7.0)
    t = NormalizeIntensity(nonzero=True, channel_wise=True)
    assert torch.allclose(NormalizeIntensityOp.from_monai(t)(x), _monai(t, x), atol=1e-6)


def test_normalize_gradient_exact_where_monai_is_not():
    x = _images(zeros=False)
    op = NormalizeIntensityOp(nonzero=True, channel_wise=True)
    assert gradient_error(op, x) < 1e-6
    # MONAI's own transform either refuses autograd (in-place write into a view) or drops the statistics' gradient
    try:
        err = gradient_error(lambda z: _monai(NormalizeIntensity(), z), x)
    except RuntimeError:
        err = float("inf")
    assert err > 1e-2


@pytest.mark.parametrize(
    "t", [ScaleIntensity(), ScaleIntensity(channel_wise=True), ScaleIntensityRange(-10, 300, 0, 1, clip=True), CastToType(torch.float32)]
)
def test_monai_steps_have_exact_gradients(t):
    """The transforms used as they are: autograd agrees with finite differences (float32 rounding aside)."""
    assert gradient_error(lambda z: _monai(t, z), _images(zeros=False), h=0.1) < 1e-3


def test_split_at_first_intensity_transform():
    pre = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image", channel_dim=-1),
            Resized("image", (8, 8)),
            CastToTyped("image", torch.float32),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
            EnsureTyped("image"),
            EnsureTyped("label"),
        ]
    )
    split = split_preprocessing(pre, "image")
    assert [type(t).__name__ for t in split.loading.transforms] == [
        "LoadImaged", "EnsureChannelFirstd", "Resized", "CastToTyped", "EnsureTyped"
    ]
    assert split.describe() == [
        {"transform": "NormalizeIntensityd", "gradient": "reimplemented"},
        {"transform": "EnsureTyped", "gradient": "monai"},
    ]
    assert split.approximations == []


def test_straight_through_warns_and_passes_gradient():
    with pytest.warns(UserWarning, match="GaussianSmooth"):
        split = split_preprocessing([ScaleIntensityd("image"), GaussianSmooth(1.0)], image_key="image")
    assert split.approximations == ["GaussianSmooth"]
    step = split.steps[1]
    x = _images(zeros=False).requires_grad_(True)
    y = step.module(x)
    assert torch.allclose(y, _monai(GaussianSmooth(1.0), x.detach()), atol=1e-5)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_random_intensity_transform_refused():
    with pytest.raises(ValueError, match="RandGaussianNoised"):
        split_preprocessing([ScaleIntensityd("image"), RandGaussianNoised("image", prob=1.0)], image_key="image")


def test_stored_units_model_is_intensity_then_network():
    pre = [CastToTyped("image", torch.float32), NormalizeIntensityd("image", nonzero=True, channel_wise=True)]
    split = split_preprocessing(pre, "image")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
    model = StoredUnitsModel(net, split.steps, bounds=(0, 255))
    x = _images()
    expected = net(_monai(NormalizeIntensity(nonzero=True, channel_wise=True), x))
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert model.bounds == (0.0, 255.0)
