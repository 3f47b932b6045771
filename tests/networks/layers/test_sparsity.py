# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch

from monai_robust.networks.layers.nonlocal_means import non_local_means
from monai_robust.networks.layers.sparsity import (
    mean_centred_shrink,
    quantile_threshold,
    soft_threshold,
    straight_through,
    topk_sparsify,
)

SHAPES = [(2, 3, 6, 7), (2, 3, 4, 5, 3)]


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [0.05, 0.3, 1.0])
def test_topk_keeps_largest_per_map(shape, k):
    x = _x(shape)
    y = topk_sparsify(x, k)
    flat_x, flat_y = x.flatten(2), y.flatten(2)
    length = flat_x.shape[-1]
    keep = max(1, math.ceil(k * length - 1e-6))
    assert bool(((flat_y != 0).sum(-1) == keep).all())  # continuous data: no ties
    assert bool(((flat_y == 0) | (flat_y == flat_x)).all())  # kept values unchanged
    smallest_kept = torch.where(flat_y != 0, flat_x.abs(), torch.full_like(flat_x, math.inf)).amin(-1)
    largest_dropped = torch.where(flat_y == 0, flat_x.abs(), torch.zeros_like(flat_x)).amax(-1)
    assert bool((smallest_kept >= largest_dropped).all())


def test_topk_rounding_and_bad_k():
    x = _x((1, 1, 10))
    assert int((topk_sparsify(x, 0.3) != 0).sum()) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    for k in (0.0, -0.1, 1.5, 10.0):
        with pytest.raises(ValueError, match="k"):
            topk_sparsify(x, k)


@pytest.mark.parametrize("fn", ["topk", "soft", "mean"])
def test_straight_through_gradient_is_identity(fn):
    x = _x((2, 3, 5, 5)).requires_grad_(True)
    ops = {
        "topk": lambda t, st: topk_sparsify(t, 0.2, st),
        "soft": lambda t, st: soft_threshold(t, torch.tensor(0.5), st),
        "mean": lambda t, st: mean_centred_shrink(t, 1.0, False, st),
    }
    y_st = ops[fn](x, True)
    (g_st,) = torch.autograd.grad((y_st * 3).sum(), x)
    assert torch.allclose(g_st, torch.full_like(x, 3.0))
    y = ops[fn](x, False)
    assert torch.allclose(y, y_st)  # same forward values
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    assert not torch.allclose(g, g_st)  # the exact gradient differs: it is masked where values were removed


def test_soft_threshold_matches_softshrink_and_broadcasts():
    x = _x((2, 3, 4, 4))
    assert torch.allclose(soft_threshold(x, torch.tensor(0.4)), torch.nn.functional.softshrink(x, 0.4))
    lam = torch.tensor([0.0, 0.5, 10.0])
    y = soft_threshold(x, lam)
    assert torch.equal(y[:, 0], x[:, 0]) and bool((y[:, 2] == 0).all())
    per_map = torch.rand(2, 3)
    assert soft_threshold(x, per_map).shape == x.shape
    with pytest.raises(ValueError, match="threshold"):
        soft_threshold(x, torch.zeros(1, 1, 1))


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9])
def test_quantile_threshold(q):
    x = _x((2, 3, 8, 8, 4))
    thr = quantile_threshold(x, q)
    assert thr.shape == (2, 3)
    below = (x.abs().flatten(2) < thr[..., None]).float().mean(-1)
    assert bool(((below - q).abs() <= 2.0 / 256).all())
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="q"):
            quantile_threshold(x, bad)


@pytest.mark.parametrize("hard", [False, True])
def test_mean_centred_shrink_moves_towards_mean(hard):
    x = _x((2, 3, 6, 6)).relu() + 1.0  # non-negative maps with a positive mean, as after a ReLU
    mu = x.mean(dim=(2, 3), keepdim=True)
    y = mean_centred_shrink(x, 0.7, hard)
    assert bool(((y - mu).abs() <= (x - mu).abs() + 1e-6).all())
    assert bool(((y - mu) * (x - mu) >= -1e-6).all())  # never crosses the mean
    if hard:
        assert bool((torch.isclose(y, mu.expand_as(y)) | (y == x)).all())
    assert torch.allclose(mean_centred_shrink(x, 0.0), x)
    with pytest.raises(ValueError, match="alpha"):
        mean_centred_shrink(x, -1.0)


def test_constant_maps_have_finite_gradients():
    x = torch.zeros(2, 3, 4, 4, requires_grad=True)  # dead ReLU maps
    for fn in (lambda t: mean_centred_shrink(t, 0.5), lambda t: topk_sparsify(t, 0.1),
               lambda t: soft_threshold(t, quantile_threshold(t, 0.5))):
        (g,) = torch.autograd.grad(fn(x).sum(), x)
        assert bool(torch.isfinite(g).all())


def test_straight_through_value():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = straight_through(x, torch.zeros(2))
    assert torch.equal(y, torch.zeros(2))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(2))


@pytest.mark.parametrize("shape", SHAPES)
def test_non_local_means_matches_definition(shape):
    g = _x(shape)
    n, c = g.shape[:2]
    flat = g.flatten(2)
    length = flat.shape[-1]
    scores = torch.einsum("ndp,ndq->npq", flat, flat)
    dot_ref = torch.einsum("npq,ncq->ncp", scores, flat) / length
    assert torch.allclose(non_local_means(g, g, g, "dot").flatten(2), dot_ref, atol=1e-4)
    wide = _x((n, length + 3) + tuple(shape[2:]), 1)  # more channels than positions: the other product order
    wf = wide.flatten(2)
    ref = torch.einsum("npq,ncq->ncp", torch.einsum("ndp,ndq->npq", wf, wf), wf) / length
    assert torch.allclose(non_local_means(wide, wide, wide, "dot").flatten(2), ref, atol=1e-3)
    gauss_ref = torch.einsum("npq,ncq->ncp", torch.softmax(scores / math.sqrt(c), -1), flat)
    assert torch.allclose(non_local_means(g, g, g, "gaussian").flatten(2), gauss_ref, atol=1e-5)
    mean = non_local_means(g, g, g, "mean")
    assert torch.allclose(mean, flat.mean(-1)[..., None].expand_as(flat).reshape(shape))
    with pytest.raises(ValueError, match="affinity"):
        non_local_means(g, g, g, "median")


def test_functions_script():
    x = _x((2, 3, 5, 5))
    for fn, args in [(topk_sparsify, (0.2, False)), (soft_threshold, (torch.tensor(0.3), True)),
                     (mean_centred_shrink, (0.5, True, False)), (quantile_threshold, (0.5,))]:
        assert torch.allclose(torch.jit.script(fn)(x, *args), fn(x, *args))
    assert torch.allclose(torch.jit.script(non_local_means)(x, x, x, "gaussian"), non_local_means(x, x, x, "gaussian"))
