# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Pure functions behind the sparsity-denoising blocks: top-k sparsification, soft-threshold shrinkage (fixed,
per-channel or quantile threshold), mean-centred shrinkage, and the straight-through estimator that gives each
of them an identity backward pass.

Every function works per *channel map*: for ``x`` of shape ``(N, C, *spatial)`` each ``x[n, c]`` is treated on
its own, whatever the number of spatial dimensions (2D and 3D alike). All are TorchScript-compatible, so a
network holding the blocks can be exported with ``torch.jit.script``.

Papers:
    Shi et al., "Robust convolutional neural networks against adversarial attacks on medical images",
    Pattern Recognition 132, 2022, https://doi.org/10.1016/j.patcog.2022.108923 (sparsity denoising inside CNNs).
    Xiao, Zhong & Zheng, "Enhancing Adversarial Defense by k-Winners-Take-All", ICLR 2020,
    https://arxiv.org/abs/1905.10510 (top-k activations).
    Donoho, "De-noising by soft-thresholding", IEEE Trans. Inf. Theory 41(3), 1995 (shrinkage).
    Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic Neurons", 2013,
    https://arxiv.org/abs/1308.3432 (straight-through estimator).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "channel_view",
    "mean_centred_shrink",
    "quantile_threshold",
    "soft_threshold",
    "straight_through",
    "topk_sparsify",
]


def straight_through(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The value of ``y`` with the gradient of the identity with respect to ``x``: ``x + (y - x).detach()``.

    Used to evaluate a defense with BPDA-style gradients (Athalye et al., ICML 2018,
    https://arxiv.org/abs/1802.00420): if robustness vanishes once the sparsifying step is skipped in the
    backward pass, it came from masked gradients rather than from the defense. No gradient reaches the
    parameters of the step (a learnable threshold), so use it for evaluation, not for training.

    Example::

        >>> x = torch.tensor([0.1, 2.0], requires_grad=True)
        >>> straight_through(x, x * (x.abs() > 1)).sum().backward()
        >>> x.grad
        tensor([1., 1.])
    """
    return x + (y - x).detach()


def channel_view(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshapes a scalar, a per-channel ``(C,)`` or a per-map ``(N, C)`` tensor to broadcast against
    ``x`` ``(N, C, *spatial)`` (any spatial rank).

    Raises:
        ValueError: When ``value`` has more than two dimensions.

    Example::

        >>> channel_view(torch.ones(3), torch.zeros(2, 3, 4, 4, 4)).shape
        torch.Size([1, 3, 1, 1, 1])
    """
    ones = [1] * (x.dim() - 2)
    if value.dim() == 0:
        return value
    if value.dim() == 1:
        return value.reshape([1, -1] + ones)
    if value.dim() == 2:
        return value.reshape([value.shape[0], value.shape[1]] + ones)
    raise ValueError(f"a threshold must be a scalar, (C,) or (N, C), got {value.dim()} dimensions.")


def _kth_smallest_abs(x: torch.Tensor, kth: int) -> torch.Tensor:
    """The ``kth`` (1-based) smallest ``|x|`` of each channel map, ``(N, C)``, differentiable."""
    return torch.kthvalue(x.abs().flatten(2), kth, dim=-1).values  # (N, C, L) -> (N, C)


def quantile_threshold(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-quantile of ``|x|`` in each channel map, ``(N, C)``, by nearest rank (``torch.kthvalue``,
    which has no size limit unlike ``torch.quantile``). The gradient flows to the element at that rank.

    Args:
        x: ``(N, C, *spatial)``.
        q: quantile in ``[0, 1]``.

    Raises:
        ValueError: When ``q`` is outside ``[0, 1]``.

    Example::

        >>> quantile_threshold(torch.arange(10.0).reshape(1, 1, 10), 0.5)
        tensor([[4.]])
    """
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q must lie in [0, 1], got q={q}.")
    n = 1
    for s in x.shape[2:]:
        n *= s
    kth = int(q * (n - 1)) + 1  # nearest rank, lower
    return _kth_smallest_abs(x, kth)


def topk_sparsify(x: torch.Tensor, k: float, straight_through_grad: bool = False) -> torch.Tensor:
    """Keeps the ``ceil(k * L)`` largest-magnitude activations of each channel map (``L`` positions) and zeroes
    the rest (k-winners-take-all per channel map). Ties at the threshold are all kept.

    Args:
        x: ``(N, C, *spatial)``.
        k: fraction of activations kept per channel map, in ``(0, 1]`` (``0.1`` keeps 10 %).
        straight_through_grad: identity gradient through the mask (evaluation against gradient masking).

    Returns:
        A tensor like ``x`` with at least ``(1 - k)`` of each map set to zero (fewer on ties).

    Raises:
        ValueError: When ``k`` is outside ``(0, 1]``.

    Example::

        >>> topk_sparsify(torch.tensor([[[1.0, -3.0, 2.0, 0.5]]]), 0.5)
        tensor([[[ 0., -3.,  2.,  0.]]])
    """
    if not (0.0 < k <= 1.0):
        raise ValueError(f"k is the fraction of activations kept and must lie in (0, 1], got k={k}.")
    n = 1
    for s in x.shape[2:]:
        n *= s
    keep = min(n, max(1, math.ceil(k * n - 1e-6)))  # the tolerance keeps 0.3 * 10 at 3
    if keep >= n:
        return x
    thr = _kth_smallest_abs(x.detach(), n - keep + 1)  # keep-th largest |x| per map (N, C); the mask is flat a.e.
    y = x * (x.abs() >= channel_view(thr, x)).to(x.dtype)
    return straight_through(x, y) if straight_through_grad else y


def soft_threshold(x: torch.Tensor, lambd: torch.Tensor, straight_through_grad: bool = False) -> torch.Tensor:
    """Soft-threshold shrinkage ``sign(x) * max(|x| - lambd, 0)``.

    Args:
        x: ``(N, C, *spatial)``.
        lambd: threshold ``>= 0`` in the units of ``x``: a scalar tensor, per channel ``(C,)`` or per channel
            map ``(N, C)``. Gradients flow into a learnable ``lambd`` unless ``straight_through_grad``.
        straight_through_grad: identity gradient with respect to ``x`` through the shrinkage.

    Example::

        >>> soft_threshold(torch.tensor([[[1.0, -0.2, -2.0]]]), torch.tensor(0.5))
        tensor([[[ 0.5000, -0.0000, -1.5000]]])
    """
    y = torch.sign(x) * torch.relu(x.abs() - channel_view(lambd, x))
    return straight_through(x, y) if straight_through_grad else y


def mean_centred_shrink(
    x: torch.Tensor, alpha: float, hard: bool = False, straight_through_grad: bool = False
) -> torch.Tensor:
    """Shrinks each channel map towards its mean: with ``mu`` and ``sigma`` the map's mean and standard
    deviation, ``mu + soft_threshold(x - mu, alpha * sigma)`` (or, with ``hard``, deviations smaller than
    ``alpha * sigma`` set to ``mu`` and the others kept).

    The threshold is relative to the map's own spread and the mean is kept in place, so the statistics the
    next layer (often a BatchNorm) was trained on move little: the operator can be inserted into a trained
    network without retraining.

    Args:
        x: ``(N, C, *spatial)``.
        alpha: threshold in units of the map's standard deviation, ``>= 0`` (``0`` is the identity).
        hard: hard thresholding around the mean instead of soft shrinkage.
        straight_through_grad: identity gradient through the shrinkage.

    Raises:
        ValueError: When ``alpha < 0``.

    Example::

        >>> y = mean_centred_shrink(torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]), 0.5)
        >>> bool(torch.allclose(y.mean(), torch.tensor(1.5)))
        True
    """
    if not (alpha >= 0.0):
        raise ValueError(f"alpha must be >= 0, got alpha={alpha}.")
    dims = [d for d in range(2, x.dim())]
    mu = x.mean(dim=dims, keepdim=True)  # (N, C, 1, ...): exact gradients, statistics included
    d = x - mu
    thr = alpha * torch.sqrt(d.pow(2).mean(dim=dims, keepdim=True) + 1e-12)  # std; finite gradient on flat maps
    if hard:
        y = mu + d * (d.abs() >= thr).to(x.dtype)
    else:
        y = mu + torch.sign(d) * torch.relu(d.abs() - thr)
    return straight_through(x, y) if straight_through_grad else y
