# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import warnings

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from monai_robust.attacks.pgd import PGD
from monai_robust.handlers.catastrophic_overfitting import CatastrophicOverfittingMonitor


def _brightness_classifier() -> torch.nn.Module:
    """Class 1 when the mean intensity exceeds 0.5: exact and robust to small budgets."""
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[-10.0], [10.0]]))
        net[2].bias.copy_(torch.tensor([5.0, -5.0]))
    return net


def _data(n=16):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = (0.2 + 0.6 * y.float()).reshape(n, 1, 1, 1) + 0.05 * torch.rand(n, 1, 6, 6, generator=g)
    return x, y


@pytest.mark.parametrize("rollback,terminate", [(True, False), (False, True)])
def test_detects_and_rolls_back(rollback, terminate):
    net = _brightness_classifier()
    x, y = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SupervisedTrainer("cpu", 3, [{"image": x, "label": y}], net, opt, torch.nn.CrossEntropyLoss())
    monitor = CatastrophicOverfittingMonitor(PGD(net, 0.02, num_steps=5, bounds=(0.0, 1.0)), x, y,
                                             rollback=rollback, terminate=terminate)

    @trainer.on(Events.EPOCH_COMPLETED(once=2))
    def collapse(engine):  # what catastrophic overfitting does to PGD accuracy, in one step
        with torch.no_grad():
            net[2].weight.mul_(-1)
            net[2].bias.mul_(-1)

    monitor.attach(trainer)  # after the collapse handler: it sees the collapsed model
    good = {k: v.clone() for k, v in net.state_dict().items()}
    trainer.run()
    assert monitor.history[:2] == [1.0, 0.0] and monitor.detected_epochs == [2]
    if rollback:
        assert all(torch.equal(v, good[k]) for k, v in net.state_dict().items())
        assert monitor.history == [1.0, 0.0, 1.0] and trainer.state.metrics["catastrophic_overfitting"] == 0.0
    else:
        assert torch.equal(net[2].weight, -good["2.weight"]) and trainer.state.epoch == 2  # stopped early
        assert trainer.state.metrics["catastrophic_overfitting"] == 1.0


def test_bad_input():
    net = _brightness_classifier()
    x, y = _data()
    attack = PGD(net, 0.02, bounds=(0.0, 1.0))
    for drop in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="max_drop"):
            CatastrophicOverfittingMonitor(attack, x, y, max_drop=drop)
    with pytest.raises(ValueError, match="batch size"):
        CatastrophicOverfittingMonitor(attack, x, y[:3])
    with pytest.raises(ValueError, match="attack"):
        CatastrophicOverfittingMonitor(None, x, y)
