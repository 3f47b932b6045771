# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Non-local feature denoising block (Xie et al., CVPR 2019) for 2D and 3D CNNs."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from monai.utils import look_up_option
from monai.utils.enums import StrEnum
from torch import nn

from monai_robust.networks.blocks.sparse_denoise import _check_dims
from monai_robust.networks.layers.nonlocal_means import non_local_means

__all__ = ["NonLocalAffinity", "NonLocalDenoise"]


class NonLocalAffinity(StrEnum):
    """Weights of the non-local means: ``"gaussian"`` (softmax of scaled dot products, Xie et al.'s default;
    ``"softmax"`` is accepted as a synonym), ``"dot"`` (dot products over the number of positions) and
    ``"mean"`` (uniform weights, the mean filter)."""

    GAUSSIAN = "gaussian"
    DOT = "dot"
    MEAN = "mean"


class NonLocalDenoise(nn.Module):
    """Residual non-local means feature denoising: ``y = x + conv1x1(NLM(x))``.

    Xie, Wu, van der Maaten, Yuille & He, "Feature Denoising for Improving Adversarial Robustness", CVPR 2019,
    https://arxiv.org/abs/1812.03411. ``NLM`` weighs every position of the map by its affinity with every
    other one (:func:`~monai_robust.networks.layers.nonlocal_means.non_local_means`), on 1x1-convolution
    embeddings ``theta``, ``phi`` of ``in_channels // 2`` channels when ``embed`` (else on ``x`` itself).
    Xie et al. follow the 1x1 convolution by a BatchNorm whose scale starts at zero; here the 1x1 convolution
    itself starts at zero, which gives the same start: a freshly inserted block is the identity, so it can be
    put into a trained network and fine-tuned from there.

    The gaussian and dot affinities build an ``L x L`` matrix per sample (``L`` positions, 784 for a 28x28
    map, 32768 for 32^3): insert the block where maps are small, in 3D especially.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3), for MONAI's ``Conv`` factory.
        in_channels: channels of the input and output.
        affinity: ``"gaussian"`` (alias ``"softmax"``), ``"dot"`` or ``"mean"``.
        embed: compute affinities on learned 1x1-convolution embeddings (``in_channels // 2`` channels, at
            least 1) instead of on the features themselves (ignored by ``"mean"``).
        straight_through: the identity gradient for the whole block (its denoising branch is skipped in the
            backward pass, BPDA-style); for evaluation against gradient masking, not for training.

    Raises:
        ValueError: For an unknown ``affinity``, ``spatial_dims`` not 1, 2 or 3, or ``in_channels < 1``.

    Example::

        >>> block = NonLocalDenoise(spatial_dims=3, in_channels=8, affinity="gaussian")
        >>> block(torch.randn(2, 8, 4, 4, 4)).shape
        torch.Size([2, 8, 4, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        affinity: NonLocalAffinity | str = NonLocalAffinity.GAUSSIAN,
        embed: bool = True,
        straight_through: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels = _check_dims(spatial_dims, in_channels)
        if isinstance(affinity, str) and affinity.lower() == "softmax":
            affinity = NonLocalAffinity.GAUSSIAN
        self.affinity: str = str(look_up_option(affinity, NonLocalAffinity))
        self.embed = bool(embed) and self.affinity != NonLocalAffinity.MEAN  # the mean filter has no affinities
        self.straight_through = bool(straight_through)
        conv = Conv[Conv.CONV, spatial_dims]
        embed_channels = max(1, in_channels // 2)
        # identity when not embedding, so that forward has one code path (and TorchScript one type)
        self.theta: nn.Module = conv(in_channels, embed_channels, 1) if self.embed else nn.Identity()
        self.phi: nn.Module = conv(in_channels, embed_channels, 1) if self.embed else nn.Identity()
        self.conv = conv(in_channels, in_channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(N, in_channels, *spatial)``; returns the denoised tensor of the same shape."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, ...) with {self.spatial_dims} spatial dims, got {list(x.shape)}."
            )
        branch = self.conv(non_local_means(self.theta(x), self.phi(x), x, self.affinity))
        if self.straight_through:
            return x + branch.detach()
        return x + branch

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, affinity={self.affinity}, "
            f"embed={self.embed}, straight_through={self.straight_through}"
        )
