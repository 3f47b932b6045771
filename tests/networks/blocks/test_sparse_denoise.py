# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import io

import pytest
import torch
from monai.networks import eval_mode

from monai_robust.networks.blocks.sparse_denoise import MeanCentredSparsify, SoftThreshold, TopKSparsify

BLOCKS = [
    (TopKSparsify, {"k": 0.25}),
    (SoftThreshold, {"lambd": 0.3}),
    (SoftThreshold, {"lambd": 0.3, "mode": "learnable"}),
    (SoftThreshold, {"mode": "quantile", "quantile": 0.6}),
    (MeanCentredSparsify, {"alpha": 0.5}),
    (MeanCentredSparsify, {"alpha": 0.5, "hard": True}),
]
CASES = [(cls, kw, dims) for cls, kw in BLOCKS for dims in (2, 3)]

ILL = [
    (TopKSparsify, {"k": 0.0}),
    (TopKSparsify, {"k": 10}),
    (TopKSparsify, {"k": float("nan")}),
    (SoftThreshold, {"lambd": -0.1}),
    (SoftThreshold, {"lambd": float("inf")}),
    (SoftThreshold, {"mode": "median"}),
    (SoftThreshold, {"mode": "quantile", "quantile": 1.0}),
    (SoftThreshold, {"mode": "quantile", "quantile": -0.2}),
    (MeanCentredSparsify, {"alpha": -1.0}),
]


def _x(dims, c=4, n=2, size=5):
    return torch.randn((n, c) + (size,) * dims, generator=torch.Generator().manual_seed(dims))


@pytest.mark.parametrize("cls,kw,dims", CASES)
def test_shape(cls, kw, dims):
    block = cls(dims, 4, **kw)
    x = _x(dims)
    with eval_mode(block):
        y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float((y - x).abs().amax()) > 0  # every block changes its input


@pytest.mark.parametrize("cls,kw", BLOCKS)
def test_script(cls, kw):
    block = cls(2, 4, **kw).eval()
    x = _x(2)
    scripted = torch.jit.script(block)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert torch.allclose(loaded(x), block(x), atol=1e-5)


@pytest.mark.parametrize("cls,kw", ILL)
def test_ill_arg(cls, kw):
    with pytest.raises(ValueError):
        cls(2, 4, **kw)


@pytest.mark.parametrize("cls", [TopKSparsify, SoftThreshold, MeanCentredSparsify])
def test_ill_dims_and_input(cls):
    for dims, ch in [(0, 4), (4, 4), (2, 0), (2, 2.5), (True, 4)]:
        with pytest.raises(ValueError):
            cls(dims, ch)
    block = cls(2, 4)
    with pytest.raises(ValueError, match="expected"):
        block(_x(2, c=3))
    with pytest.raises(ValueError, match="expected"):
        block(_x(3))


@pytest.mark.parametrize("cls,kw", BLOCKS)
def test_extra_repr_and_straight_through(cls, kw):
    block = cls(2, 4, **kw, straight_through=True)
    text = repr(block)
    assert "spatial_dims=2" in text and "in_channels=4" in text and "straight_through=True" in text
    for key, value in kw.items():
        assert f"{key}={value}" in text
    x = _x(2).requires_grad_(True)
    (grad,) = torch.autograd.grad(block(x).sum(), x)
    assert torch.allclose(grad, torch.ones_like(x))  # identity gradient (BPDA)


def test_learnable_threshold_trains_and_saves():
    block = SoftThreshold(2, 4, lambd=0.2, mode="learnable")
    x = _x(2)
    block(x).pow(2).sum().backward()
    assert block.lambd.grad is not None and bool((block.lambd.grad != 0).all())
    assert set(block.state_dict()) == {"lambd"}
    assert SoftThreshold(2, 4, lambd=0.2).state_dict() == {}  # a fixed threshold is a setting, not a weight


def test_topk_fraction_per_map():
    y = TopKSparsify(3, 4, k=0.2)(_x(3, size=5))  # 125 positions -> 25 kept
    assert bool(((y != 0).flatten(2).sum(-1) == 25).all())
