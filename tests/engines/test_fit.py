# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.engines.fit import classification_accuracy, fit_classifier
from monai_robust.networks import SmallCNN


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright vs dark squares: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g) + 0.6 * y.float()[:, None, None, None]
    return x, y


def test_fit_learns_and_keeps_the_best_epoch():
    train, val = _data(128, 0), _data(32, 1)
    torch.manual_seed(0)
    net = SmallCNN(channels=(4, 8), norm=None)
    info = fit_classifier(net, train, val, epochs=6, lr=3e-2, batch_size=16)
    assert len(info["val_per_epoch"]) == 6 and info["val_best"] == max(info["val_per_epoch"])
    assert not net.training
    assert classification_accuracy(net, *val) == pytest.approx(info["val_best"])  # the best epoch's weights
    assert info["val_best"] > 0.9


def test_same_seed_same_model():
    train, val = _data(32, 0), _data(16, 1)
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        net = SmallCNN(channels=(4,), norm=None, dropout=0.2)
        fit_classifier(net, train, val, epochs=2, balanced=True)
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_balanced_accuracy():
    net = torch.nn.Linear(1, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0], [0.0]]))
        net.bias.copy_(torch.tensor([1.0, 0.0]))  # always class 0
    x, y = torch.zeros(4, 1), torch.tensor([0, 0, 0, 1])
    assert classification_accuracy(net, x, y) == 0.75
    assert classification_accuracy(net, x, y, balanced=True) == 0.5


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"epochs": 1.5}])
def test_ill_args(kwargs):
    train = _data(8, 0)
    args = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError):
        fit_classifier(SmallCNN(channels=(4,)), train, train, **args)
    with pytest.raises(ValueError, match="labels"):
        classification_accuracy(SmallCNN(channels=(4,)), train[0], train[1][:3])
