# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Sparsity-denoising blocks for 2D and 3D CNNs: top-k sparsification, soft-threshold shrinkage and
mean-centred shrinkage of feature maps.

Shi et al. (Pattern Recognition 132, 2022, https://doi.org/10.1016/j.patcog.2022.108923) trace the
vulnerability of medical CNNs to noisy features that adversarial perturbations magnify, and defend with
*sparsity denoising operators* embedded in the network. Their exact operator is not public; these blocks are
the family it belongs to. Each block maps ``(N, C, *spatial)`` to the same shape by calling a pure function of
:mod:`monai_robust.networks.layers.sparsity` (timm's ``drop_path`` / ``DropPath`` pairing), takes
``(spatial_dims, in_channels, ...)`` like MONAI's blocks, is TorchScript-exportable, and has a
``straight_through`` switch: the identity gradient through the sparsifying step, so that an evaluation can
check that robustness does not come from masked gradients (see
:func:`monai_robust.networks.utils.straight_through_mode`).
"""

from __future__ import annotations

import math

import torch
from monai.utils import look_up_option
from monai.utils.enums import StrEnum
from torch import nn

from monai_robust.networks.layers.sparsity import mean_centred_shrink, quantile_threshold, soft_threshold, topk_sparsify

__all__ = ["MeanCentredSparsify", "SoftThreshold", "ThresholdMode", "TopKSparsify"]


class ThresholdMode(StrEnum):
    """How :class:`SoftThreshold` chooses its threshold: one fixed value, a learnable value per channel,
    or a quantile of each channel map's magnitudes."""

    FIXED = "fixed"
    LEARNABLE = "learnable"
    QUANTILE = "quantile"


def _check_dims(spatial_dims: int, in_channels: int) -> tuple[int, int]:
    if not isinstance(spatial_dims, int) or isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got spatial_dims={spatial_dims!r}.")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got in_channels={in_channels!r}.")
    return spatial_dims, in_channels


def _check_fraction(name: str, value: float, low_open: bool, high_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    lo_ok = ok and (value > 0 if low_open else value >= 0)
    hi_ok = ok and (value < 1 if high_open else value <= 1)
    if not (lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} is a fraction and must lie in {interval}, got {name}={value!r}.")
    return float(value)


def _check_nonnegative(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}.")
    return float(value)


class TopKSparsify(nn.Module):
    """Keeps the ``k`` fraction of largest-magnitude activations of every channel map and zeroes the rest
    (k-winners-take-all, per channel map).

    Xiao, Zhong & Zheng, "Enhancing Adversarial Defense by k-Winners-Take-All", ICLR 2020,
    https://arxiv.org/abs/1905.10510; used here as a sparsity-denoising operator (Shi et al. 2022).

    Args:
        spatial_dims: number of spatial dimensions of the input (1, 2 or 3).
        in_channels: number of channels of the input (checked in ``forward``).
        k: fraction of activations kept in each channel map, in ``(0, 1]`` (``0.1`` keeps 10 %).
        straight_through: identity gradient through the mask (use for evaluation against gradient masking).

    Raises:
        ValueError: When ``k`` is outside ``(0, 1]``, ``spatial_dims`` is not 1, 2 or 3, or ``in_channels < 1``.

    Example::

        >>> block = TopKSparsify(spatial_dims=2, in_channels=16, k=0.2)
        >>> block(torch.randn(4, 16, 8, 8)).shape
        torch.Size([4, 16, 8, 8])
    """

    def __init__(self, spatial_dims: int, in_channels: int, k: float = 0.2, straight_through: bool = False) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels = _check_dims(spatial_dims, in_channels)
        self.k = _check_fraction("k", k, low_open=True, high_open=False)
        self.straight_through = bool(straight_through)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(N, in_channels, *spatial)``; returns the sparsified tensor of the same shape."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, ...) with {self.spatial_dims} spatial dims, got {list(x.shape)}."
            )
        return topk_sparsify(x, self.k, self.straight_through)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, k={self.k}, "
            f"straight_through={self.straight_through}"
        )


class SoftThreshold(nn.Module):
    """Soft-threshold shrinkage of feature maps, ``sign(x) * max(|x| - lambda, 0)``, with lambda fixed,
    learned per channel, or the ``quantile`` of each channel map's magnitudes.

    Donoho, "De-noising by soft-thresholding", IEEE Trans. Inf. Theory 41(3), 1995; as a feature-denoising
    operator inside CNNs, Shi et al., Pattern Recognition 132, 2022.

    Args:
        spatial_dims: number of spatial dimensions of the input (1, 2 or 3).
        in_channels: number of channels of the input.
        lambd: threshold in activation units for ``mode="fixed"``, and the initial value of the per-channel
            thresholds for ``mode="learnable"`` (the magnitude ``|lambda_c|`` is used, so it cannot go negative).
        mode: ``"fixed"``, ``"learnable"`` or ``"quantile"``.
        quantile: for ``mode="quantile"``, the quantile of ``|x|`` in each channel map used as that map's
            threshold, in ``[0, 1)`` (``0.5``: half of each map is zeroed and the rest shrunk).
        straight_through: identity gradient with respect to the input through the shrinkage (evaluation only:
            the learnable thresholds get no gradient then).

    Raises:
        ValueError: When ``lambd < 0`` or not finite, ``quantile`` is outside ``[0, 1)``, ``mode`` is unknown,
            ``spatial_dims`` is not 1, 2 or 3, or ``in_channels < 1``.

    Example::

        >>> block = SoftThreshold(spatial_dims=3, in_channels=8, mode="learnable", lambd=0.05)
        >>> block(torch.randn(2, 8, 4, 4, 4)).shape
        torch.Size([2, 8, 4, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        lambd: float = 0.1,
        mode: ThresholdMode | str = ThresholdMode.FIXED,
        quantile: float = 0.5,
        straight_through: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels = _check_dims(spatial_dims, in_channels)
        lambd = _check_nonnegative("lambd", lambd)
        self.mode: str = str(look_up_option(mode, ThresholdMode))
        self.quantile = _check_fraction("quantile", quantile, low_open=False, high_open=True)
        self.straight_through = bool(straight_through)
        init = torch.full((in_channels,), lambd)
        if self.mode == ThresholdMode.LEARNABLE:
            self.lambd = nn.Parameter(init)
        else:
            self.register_buffer("lambd", init, persistent=False)  # a setting, not a learned weight

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        """The threshold used for ``x``: ``(C,)`` for fixed and learnable modes, ``(N, C)`` for quantile mode."""
        if self.mode == "quantile":
            return quantile_threshold(x, self.quantile)
        return self.lambd.abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(N, in_channels, *spatial)``; returns the shrunk tensor of the same shape."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, ...) with {self.spatial_dims} spatial dims, got {list(x.shape)}."
            )
        return soft_threshold(x, self.threshold(x).to(x.dtype), self.straight_through)

    def extra_repr(self) -> str:
        setting = f"quantile={self.quantile}" if self.mode == "quantile" else f"lambd={float(self.lambd.detach().abs().mean()):g}"
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, mode={self.mode}, {setting}, "
            f"straight_through={self.straight_through}"
        )


class MeanCentredSparsify(nn.Module):
    """Shrinks every channel map towards its own mean: deviations from the mean smaller than ``alpha``
    standard deviations are removed and larger ones shrunk by that amount (or kept, with ``hard=True``).

    Because the threshold is relative to each map's spread and the mean stays in place, the statistics that
    the following layer was trained on change little, so this block can be inserted into an already trained
    network and used without retraining (unlike a plain soft threshold of non-negative ReLU outputs, which
    shifts their mean). A sparsity-denoising operator after Shi et al., Pattern Recognition 132, 2022.

    Args:
        spatial_dims: number of spatial dimensions of the input (1, 2 or 3).
        in_channels: number of channels of the input.
        alpha: threshold in units of each map's standard deviation, ``>= 0`` (``0`` is the identity).
        hard: hard thresholding (small deviations set to the mean, others unchanged) instead of soft shrinkage.
        straight_through: identity gradient through the shrinkage (evaluation against gradient masking).

    Raises:
        ValueError: When ``alpha`` is negative or not finite, ``spatial_dims`` is not 1, 2 or 3, or
            ``in_channels < 1``.

    Example::

        >>> block = MeanCentredSparsify(spatial_dims=2, in_channels=16, alpha=0.5)
        >>> block(torch.randn(4, 16, 8, 8)).shape
        torch.Size([4, 16, 8, 8])
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, alpha: float = 0.5, hard: bool = False, straight_through: bool = False
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels = _check_dims(spatial_dims, in_channels)
        self.alpha = _check_nonnegative("alpha", alpha)
        self.hard = bool(hard)
        self.straight_through = bool(straight_through)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(N, in_channels, *spatial)``; returns the shrunk tensor of the same shape."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, ...) with {self.spatial_dims} spatial dims, got {list(x.shape)}."
            )
        return mean_centred_shrink(x, self.alpha, self.hard, self.straight_through)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, alpha={self.alpha}, "
            f"hard={self.hard}, straight_through={self.straight_through}"
        )
