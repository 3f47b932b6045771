# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_robust.attacks import PGD
from monai_robust.engines.probes import gradient_probe, large_eps_ladder, randomness_probe, unbounded_probe
from monai_robust.metrics.validity import check_gradients, check_randomness
from monai_robust.utils.enums import LpNorm
from tests.utils import SmallCNN


class Rounded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN(2, 1, 2, width=4)

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN(2, 1, 2, width=4)

    def forward(self, x):
        return self.net(F.dropout(x, 0.5, training=True))


def test_probes_detect_masking_and_randomness():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 2, (8,))
    net = SmallCNN(2, 1, 2, width=4).train()
    g = gradient_probe(net, x, y)
    assert g["zero_margin_fraction"] == 0 and g["nonfinite_fraction"] == 0 and g["mean_abs_gradient"] > 0
    assert net.training and all(p.grad is None for p in net.parameters())  # state restored
    assert check_gradients({"gradients": g}).status == "pass"
    masked = gradient_probe(Rounded(), x, y)
    assert masked["zero_margin_fraction"] == 1.0 and check_gradients({"gradients": masked}).status == "fail"
    assert check_randomness({"randomness": randomness_probe(net, x)}).status == "pass"
    verdict = check_randomness({"randomness": randomness_probe(Noisy(), x)})
    assert verdict.status == "fail" and "EOT" in verdict.message
    with pytest.raises(ValueError, match="num_passes"):
        randomness_probe(net, x, num_passes=1)


def test_unbounded_probe_ladder():
    assert large_eps_ladder(LpNorm.LINF, (0.0, 1.0), [0.01], torch.zeros(1, 1, 4, 4)) == pytest.approx([0.04, 0.16, 0.64, 1.0])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()  # linear: the full box reaches both classes
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    entry = unbounded_probe(PGD(net, num_steps=5, bounds=(0.0, 1.0)), lambda im: net(im), x, y, [0.01], 0.05, seed=0)
    assert entry["n"] == 8 and entry["accuracy"] <= 0.05 and entry["ladder"][-1]["accuracy"] == entry["accuracy"]
