# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A model with NaN logits or NaN input gradients stops every attack with ``NonFiniteError`` (never a silent no-op)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_robust.attacks import APGD, CW, FGSM, PGD, DeepFool, NonFiniteError


class NaNLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) * torch.nan


class NaNGradient(nn.Module):
    """Finite logits, NaN input gradient: ``0 * sqrt(x - x.detach())`` is 0 forward, ``0 * inf`` backward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) + 0 * torch.sqrt(x - x.detach()).flatten(1).sum(1, keepdim=True)


ATTACKS = {
    "FGSM": lambda net: FGSM(net, 0.1, bounds=(0.0, 1.0)),
    "PGD-L2": lambda net: PGD(net, 0.5, lp=2, num_steps=3, bounds=(0.0, 1.0)),
    "APGD": lambda net: APGD(net, 0.1, num_steps=3, bounds=(0.0, 1.0)),
    "CW": lambda net: CW(net, bounds=(0.0, 1.0), num_steps=3, binary_search_steps=1),
    "DeepFool": lambda net: DeepFool(net, num_steps=3, bounds=(0.0, 1.0)),
}


@pytest.mark.parametrize("model", [NaNLogits, NaNGradient])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_nonfinite_model_raises(model, name):
    torch.manual_seed(0)
    net = model().eval()
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        ATTACKS[name](net)(x, y)
    assert issubclass(NonFiniteError, ValueError)
    assert net.training is False and all(p.requires_grad for p in net.parameters())  # state restored
