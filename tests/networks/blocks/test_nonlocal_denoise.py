# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import io

import pytest
import torch
from monai.networks import eval_mode

from monai_robust.networks.blocks.nonlocal_denoise import NonLocalDenoise

SETTINGS = [
    {"affinity": "gaussian"},
    {"affinity": "softmax", "embed": False},
    {"affinity": "dot"},
    {"affinity": "dot", "embed": False},
    {"affinity": "mean"},
]
CASES = [(kw, dims) for kw in SETTINGS for dims in (2, 3)]


def _x(dims, c=4, n=2, size=5):
    return torch.randn((n, c) + (size,) * dims, generator=torch.Generator().manual_seed(dims))


def _trained(block):
    torch.nn.init.normal_(block.conv.weight, std=0.1)  # leave the identity start so that outputs differ from x
    return block


@pytest.mark.parametrize("kw,dims", CASES)
def test_shape(kw, dims):
    block = _trained(NonLocalDenoise(dims, 4, **kw))
    x = _x(dims)
    with eval_mode(block):
        y = block(x)
    assert y.shape == x.shape and float((y - x).abs().amax()) > 0


@pytest.mark.parametrize("kw", SETTINGS)
def test_script(kw):
    block = _trained(NonLocalDenoise(2, 4, **kw)).eval()
    x = _x(2)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(block), buffer)
    buffer.seek(0)
    assert torch.allclose(torch.jit.load(buffer)(x), block(x), atol=1e-5)


@pytest.mark.parametrize("args", [(2, 4, "median"), (4, 4), (2, 0), (0, 4)])
def test_ill_arg(args):
    with pytest.raises(ValueError):
        NonLocalDenoise(*args)
    with pytest.raises(ValueError, match="expected"):
        NonLocalDenoise(2, 4)(_x(2, c=3))


def test_identity_start_learning_and_straight_through():
    block = NonLocalDenoise(3, 4)
    x = _x(3).requires_grad_(True)
    assert torch.equal(block(x), x)  # a freshly inserted block changes nothing
    block(x).pow(2).sum().backward()
    assert block.conv.weight.grad is not None and float(block.conv.weight.grad.abs().sum()) > 0
    _trained(block).straight_through = True
    (grad,) = torch.autograd.grad(block(x).sum(), x)
    assert torch.allclose(grad, torch.ones_like(x))
    text = repr(block)
    assert "affinity=gaussian" in text and "embed=True" in text and "straight_through=True" in text
    assert isinstance(NonLocalDenoise(2, 4, affinity="mean").theta, torch.nn.Identity)  # no unused weights


def test_constant_map_is_a_fixed_point_of_the_means():
    block = _trained(NonLocalDenoise(2, 4, affinity="gaussian"))
    x = torch.ones(1, 4, 5, 5) * torch.arange(4.0).reshape(1, 4, 1, 1)
    expected = x + block.conv(x)  # every weighted mean of a constant map is that constant
    assert torch.allclose(block(x), expected, atol=1e-5)
