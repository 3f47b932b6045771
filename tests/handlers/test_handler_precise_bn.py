# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``PreciseBatchNorm``: exact statistics over the loader, before the epoch's other handlers, state restored."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_robust.handlers import PreciseBatchNorm


def test_exact_statistics_before_epoch_handlers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, momentum=0.5), nn.ReLU()).eval()
    data = [{"image": torch.randn(4, 1, 8, 8) * 3 + 1} for _ in range(3)]
    seen = []
    engine = Engine(lambda e, b: None)
    # attached after the epoch handler: still runs first, because it fires at the epoch's last iteration
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(net[1].running_mean.clone()))
    PreciseBatchNorm(net, data).attach(engine)
    engine.run(data, max_epochs=2)
    with torch.no_grad():
        feats = torch.cat([net[0](b["image"]) for b in data])
    expected_mean = feats.mean((0, 2, 3))
    torch.testing.assert_close(seen[-1], expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net[1].running_mean, expected_mean, atol=1e-5, rtol=1e-5)
    assert net[1].momentum == 0.5 and not net.training and len(seen) == 2


def test_num_batches_tuples_and_bad_args() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    data = [(torch.randn(2, 1, 4, 4) + i, torch.zeros(2)) for i in range(3)]
    PreciseBatchNorm(net, data, num_batches=1)()
    with torch.no_grad():
        torch.testing.assert_close(net[1].running_mean, net[0](data[0][0]).mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    assert net.training  # restored
    PreciseBatchNorm(nn.Linear(2, 2), data)()  # no BatchNorm: nothing to do
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_batches"):
            PreciseBatchNorm(net, data, num_batches=bad)
