# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``SmallCNN``: the small 2D/3D classifier of the tutorials, the benchmarks and the tests (seconds to train on a
CPU, big enough to be attacked, defended and hardened meaningfully on 28-pixel MedMNIST images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from monai.utils import look_up_option
from monai.utils.enums import StrEnum
from torch import nn

__all__ = ["Downsample", "SmallCNN"]


class Downsample(StrEnum):
    """How :class:`SmallCNN` halves the resolution after each stage but the last."""

    POOL = "pool"  # 2x max pooling after the ReLU
    STRIDE = "stride"  # a stride-2 convolution (about 8x fewer 3D convolution outputs: faster on a CPU)


class SmallCNN(nn.Module):
    """A small convolutional classifier: convolution (3, padding 1), optional batch norm and ReLU per stage, the
    resolution halved after every stage but the last, global average pooling, dropout and a linear layer.

    The stages are ``self.features`` (an ``nn.Sequential``, so blocks can be inserted after a named layer with
    :func:`~monai_robust.networks.utils.insert_blocks`, e.g. ``"features.3"``: the first pooling with
    ``norm="batch"``), then ``self.pool``, ``self.dropout`` and ``self.fc``. The default, 2D, 1 channel, 2 classes,
    ``channels=(16, 32, 64)``, ``norm="batch"``, is the model of the hardening tutorial (about 25k parameters).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output logits.
        channels: output channels of each convolution stage (one or more positive integers).
        norm: ``"batch"`` for a BatchNorm after each convolution, ``None`` for none.
        dropout: dropout probability before the linear layer, in ``[0, 1)`` (0: no dropout layer).
        downsample: ``"pool"`` (2x max pooling) or ``"stride"`` (stride-2 convolutions), see :class:`Downsample`.

    Raises:
        ValueError: When ``spatial_dims`` is not 2 or 3, ``in_channels``, ``num_classes`` or an entry of
            ``channels`` is not a positive integer, ``channels`` is empty, ``norm`` is not ``"batch"`` or ``None``,
            ``dropout`` lies outside ``[0, 1)`` or ``downsample`` is unknown.

    Example::

        >>> net = SmallCNN(spatial_dims=3, channels=(16, 32, 32), norm=None, downsample="stride")
        >>> net(torch.zeros(2, 1, 28, 28, 28)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 32, 64),
        norm: str | None = "batch",
        dropout: float = 0.0,
        downsample: Downsample | str = Downsample.POOL,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={spatial_dims!r}.")
        channels = tuple(channels)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), *(("channels", c) for c in channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must hold positive integers, got {name}={value!r}.")
        if not channels:
            raise ValueError("channels must name at least one stage, got channels=().")
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be 'batch' or None, got norm={norm!r}.")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got dropout={dropout!r}.")
        downsample = look_up_option(downsample, Downsample)
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip((in_channels, *channels[:-1]), channels)):
            last = i == len(channels) - 1
            stride = 1 if last or downsample == Downsample.POOL else 2
            layers.append(conv(cin, cout, 3, stride=stride, padding=1))
            if norm is not None:
                layers.append(Norm[Norm.BATCH, spatial_dims](cout))
            layers.append(nn.ReLU())
            if not last and downsample == Downsample.POOL:
                layers.append(Pool[Pool.MAX, spatial_dims](2))
        self.features = nn.Sequential(*layers)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of ``x`` in shape ``(batch, in_channels, spatial_1, spatial_2[, spatial_3])``."""
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))
