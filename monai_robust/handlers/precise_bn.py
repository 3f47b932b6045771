# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``PreciseBatchNorm``: recomputes the BatchNorm running statistics at the end of each training epoch, so that
evaluation-mode predictions match the trained weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from monai_robust.data.batches import split_batch

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["PreciseBatchNorm"]


class PreciseBatchNorm:
    """Replaces the exponential moving averages of every BatchNorm layer by the exact mean and variance over
    ``loader`` ("precise BN": Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, https://arxiv.org/abs/2105.07576;
    the same computation as ``torch.optim.swa_utils.update_bn``), at the last iteration of every training epoch, i.e.
    before any ``EPOCH_COMPLETED`` handler (validation, checkpointing) sees the network, whatever the handlers' order.

    When the weights still move fast (few iterations, small 3D batches), the moving averages lag behind them and an
    evaluation-mode network can predict one class for every input while its training-mode predictions are right.
    Costs one forward pass over ``loader`` (no gradients) per epoch.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is fine).
        loader: batches of training images: MONAI dictionaries (``image_key``), ``(image, ...)`` tuples or tensors.
        num_batches: use at most this many batches; default all.
        image_key: the image entry of dictionary batches.

    Raises:
        ValueError: When ``num_batches`` is not a positive integer.

    Example::

        >>> trainer = SupervisedTrainer(..., train_handlers=[ValidationHandler(...), PreciseBatchNorm(net, loader)])
    """

    def __init__(self, network: nn.Module, loader: Iterable[Any], num_batches: int | None = None,
                 image_key: str = "image") -> None:
        if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                        or num_batches < 1):
            raise ValueError(f"num_batches must be a positive integer or None, got num_batches={num_batches!r}.")
        self.network = network
        self.loader = loader
        self.num_batches = num_batches
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        """Runs at the last ``ITERATION_COMPLETED`` of each epoch."""
        def last_of_epoch(eng: Engine, _: int) -> bool:
            return eng.state.epoch_length is not None and eng.state.iteration % eng.state.epoch_length == 0

        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=last_of_epoch), self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Recomputes the statistics (the network's train/eval mode and the layers' momenta are restored)."""
        layers = [m for m in self.network.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not layers:
            return
        momenta, was_training = [m.momentum for m in layers], self.network.training
        device = next(iter(self.network.parameters()), torch.empty(0)).device
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the exact statistics over the batches seen
        self.network.train()
        try:
            with torch.no_grad():
                for i, batch in enumerate(self.loader):
                    if self.num_batches is not None and i >= self.num_batches:
                        break
                    x, _ = split_batch(batch[self.image_key] if isinstance(batch, Mapping) else batch, "precise BN")
                    self.network(x.to(device))
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
            self.network.train(was_training)
