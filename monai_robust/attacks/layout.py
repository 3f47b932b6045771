# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The memory layout a network runs in while an attack or a UAP fit uses it: channels-last for the duration, the
caller's tensors restored afterwards.

oneDNN (the CPU convolutions of PyTorch) and the tensor cores of a GPU are fastest with channels-last activations.
A network whose weights are channels-last makes PyTorch's convolutions produce channels-last outputs, so converting
its 4D (2D images) or 5D (3D volumes) parameters and buffers is enough. Measured on this project's 2-core Xeon, one
thread, fp32, CPU seconds channels-last vs contiguous (minimum of 3):

* the PneumoniaMNIST ``SmallCNN`` of ``bench/universal.py`` (28²): forward over 1000 images (chunks of 128) 0.15 vs
  0.28; forward and input gradient over 256 images in minibatches of 16: 0.12 vs 0.16;
* MONAI ``DenseNet121`` (2D, 16 × 3 × 64²): forward 0.120 vs 0.167, forward and input gradient 0.274 vs 0.353;
* a 3D ``SmallCNN`` (channels 16, 32, 32, strided; 8 × 32³): no gain (0.019 vs 0.018 with the gradient).

The numbers stay fp32; only the order of the floating-point sums differs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["channels_last", "channels_last_format"]


def channels_last_format(ndim: int) -> torch.memory_format | None:
    """``torch.channels_last`` for 4D batches (2D images), ``torch.channels_last_3d`` for 5D (3D volumes), else None.

    Example::

        >>> channels_last_format(5)
        torch.channels_last_3d
    """
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


@contextlib.contextmanager
def channels_last(network: nn.Module, ndim: int) -> Iterator[torch.memory_format | None]:
    """Runs ``network`` with its ``ndim``-dimensional parameters and buffers channels-last, then gives each of them
    back its own tensor (same values, same strides), also on error.

    Args:
        network: the model; its parameter objects stay the same (only their ``.data`` is swapped), so optimisers and
            hooks that hold them are unaffected.
        ndim: the dimensions of the network's input batches: 4 (``(N, C, H, W)``) or 5 (``(N, C, D, H, W)``); any
            other value leaves the network as it is.

    Yields:
        The memory format to give the inputs (``x.contiguous(memory_format=fmt)``), or None when nothing changed.

    Example::

        >>> with channels_last(net, 4) as fmt:
        ...     logits = net(x.contiguous(memory_format=fmt))
    """
    fmt = channels_last_format(ndim)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        if fmt is not None:
            for t in itertools.chain(network.parameters(), network.buffers()):
                if t.ndim != ndim:
                    continue
                # empty_like, not .contiguous(): with one input channel a tensor counts as contiguous in both formats,
                # and the convolutions pick their layout from the weight's actual strides
                cl = torch.empty_like(t.data, memory_format=fmt)
                if cl.stride() != t.stride():
                    saved.append((t, t.data))
                    t.data = cl.copy_(t.data)
        yield fmt
    finally:
        for t, data in saved:
            t.data = data
