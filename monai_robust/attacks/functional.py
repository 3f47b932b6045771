# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Shape-agnostic pieces of every gradient attack: Lp norms, steepest-ascent directions, projections,
random starts and clipping. Each works on ``(N, C, *spatial)`` tensors of any spatial rank by flattening
every dimension but the batch (foolbox's ``normalize``/``project``/``get_random_start`` split)."""

from __future__ import annotations

import torch

from monai_robust.utils.enums import LpNorm, as_lp

__all__ = ["batch_view", "clip_to_bounds", "lp_norm", "lp_normalize", "lp_project", "random_start"]

_TINY = 1e-12


def batch_view(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A scalar, or a per-sample ``(N,)`` tensor reshaped to broadcast against ``like`` ``(N, ...)``.

    Example::

        >>> batch_view(torch.ones(4), torch.zeros(4, 1, 8, 8, 8)).shape
        torch.Size([4, 1, 1, 1, 1])
    """
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value.to(like).reshape((-1,) + (1,) * (like.ndim - 1))  # any spatial rank, not only 2D
    return float(value)


def lp_norm(x: torch.Tensor, lp: str | float | LpNorm) -> torch.Tensor:
    """Per-sample Lp norm of ``x`` ``(N, ...)``, returned as ``(N,)``.

    Example::

        >>> lp_norm(torch.ones(2, 1, 3, 3), 2)
        tensor([3., 3.])
    """
    lp = as_lp(lp)
    flat = x.reshape(x.shape[0], -1)
    if lp == LpNorm.LINF:
        return flat.abs().amax(dim=1)
    return flat.norm(p=float(lp.value), dim=1)


def lp_normalize(grad: torch.Tensor, lp: str | float | LpNorm) -> torch.Tensor:
    """The steepest-ascent direction of unit Lp norm for gradient ``grad``: ``sign`` for L-inf,
    ``grad / ||grad||_2`` for L2, and the largest-magnitude coordinate for L1.

    Example::

        >>> lp_normalize(torch.tensor([[-2.0, 0.5]]), "inf")
        tensor([[-1.,  1.]])
    """
    lp = as_lp(lp)
    if lp == LpNorm.LINF:
        return grad.sign()
    if lp == LpNorm.L2:
        return grad / batch_view(lp_norm(grad, lp).clamp_min(_TINY), grad)
    flat = grad.reshape(grad.shape[0], -1)
    idx = flat.abs().argmax(dim=1, keepdim=True)
    out = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx).sign())
    return out.reshape_as(grad)


def lp_project(delta: torch.Tensor, eps: float | torch.Tensor, lp: str | float | LpNorm) -> torch.Tensor:
    """Projects a perturbation onto the Lp ball of radius ``eps`` (scalar or per-sample ``(N,)``).

    Example::

        >>> lp_project(torch.tensor([[3.0, 4.0]]), 1.0, 2)
        tensor([[0.6000, 0.8000]])
    """
    lp = as_lp(lp)
    if lp == LpNorm.LINF:
        e = batch_view(eps, delta)
        return delta.clamp(-e, e) if not isinstance(e, torch.Tensor) else torch.maximum(torch.minimum(delta, e), -e)
    norms = lp_norm(delta, lp)
    eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device).expand_as(norms)
    if lp == LpNorm.L2:
        factor = torch.where(norms > eps_t, eps_t / norms.clamp_min(_TINY), torch.ones_like(norms))
        return delta * batch_view(factor, delta)
    return _project_l1(delta, eps_t)


def _project_l1(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008), batched."""
    flat = delta.reshape(delta.shape[0], -1)
    inside = flat.abs().sum(1) <= eps
    mu = flat.abs().sort(dim=1, descending=True).values
    cums = mu.cumsum(1)
    ar = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cums - eps[:, None]) / ar > 0
    rho = cond.to(flat.dtype).mul(ar).argmax(1, keepdim=True)
    theta = ((cums.gather(1, rho) - eps[:, None]) / (rho + 1).to(flat.dtype)).clamp_min(0)
    proj = flat.sign() * (flat.abs() - theta).clamp_min(0)
    return torch.where(inside[:, None], flat, proj).reshape_as(delta)


def random_start(
    like: torch.Tensor, eps: float | torch.Tensor, lp: str | float | LpNorm, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random perturbation inside the Lp ball: uniform in the box for L-inf, uniform in the ball for L2
    (Gaussian direction, radius ``eps * u**(1/d)``), uniform on the simplex-scaled ball for L1.

    Example::

        >>> d = random_start(torch.zeros(8, 1, 4, 4, 4), 0.1, 2, torch.Generator().manual_seed(0))
        >>> bool((lp_norm(d, 2) <= 0.1 + 1e-6).all())
        True
    """
    lp = as_lp(lp)
    kw = {"dtype": like.dtype, "device": like.device, "generator": generator}
    if lp == LpNorm.LINF:
        return (torch.rand(like.shape, **kw) * 2 - 1) * batch_view(eps, like)
    n, d = like.shape[0], like[0].numel()
    if lp == LpNorm.L2:
        direction = torch.randn(like.shape, **kw)
        direction = direction / batch_view(lp_norm(direction, lp).clamp_min(_TINY), like)
        radius = torch.rand(n, **kw) ** (1.0 / d)
        return direction * batch_view(radius, like) * batch_view(eps, like)
    lap = -torch.log(torch.rand(like.shape, **kw).clamp_min(_TINY))  # exponential -> uniform on simplex
    signs = torch.randint(0, 2, like.shape, device=like.device, generator=generator).to(like.dtype) * 2 - 1
    flat = (lap / batch_view(lap.reshape(n, -1).sum(1), like)) * signs
    radius = torch.rand(n, **kw) ** (1.0 / d)
    return flat * batch_view(radius, like) * batch_view(eps, like)


def clip_to_bounds(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clips ``x`` to ``bounds`` (``None``: no box constraint).

    Example::

        >>> clip_to_bounds(torch.tensor([-1.0, 0.5, 2.0]), (0.0, 1.0))
        tensor([0.0000, 0.5000, 1.0000])
    """
    return x if bounds is None else x.clamp(bounds[0], bounds[1])
