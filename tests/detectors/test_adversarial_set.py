# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``collect_adversarials``: only correct images attacked, successes within their budget, the ladder's stop rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_robust.attacks import PGD
from monai_robust.detectors.adversarial_set import collect_adversarials


def _setup(n: int = 24) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:4] = 1 - y[:4]  # four misclassified images
    return net, [(x[i : i + 8], y[i : i + 8]) for i in range(0, n, 8)]


def test_only_correct_images_attacked_and_successes_hold() -> None:
    net, data = _setup()
    ladder = [0.01, 0.05, 0.5]
    found = collect_adversarials(net, PGD(net, num_steps=5, bounds=(0.0, 1.0)), data, torch.device("cpu"),
                                 eps_ladder=ladder, min_adversarial=10)
    assert found.n_correct == 20 and found.clean.shape[0] == 24
    counts = list(found.attacked.values())
    assert counts[0] == 20 and counts == sorted(counts, reverse=True)  # broken images retire from the ladder
    assert found.adversarial.shape[0] == found.eps.shape[0] >= 10
    # every adversarial changes the prediction of one correct clean image and lies within its rung
    clean, labels = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    correct = clean[net(clean).argmax(1) == labels]
    for adv, eps in zip(found.adversarial, found.eps):
        dist = (correct - adv).flatten(1).abs().amax(1)
        j = int(dist.argmin())
        assert float(dist[j]) <= float(eps) + 1e-6
        assert int(net(adv[None]).argmax(1)) != int(net(correct[j : j + 1]).argmax(1))


def test_ladder_stops_at_first_rung_with_enough() -> None:
    net, data = _setup()
    found = collect_adversarials(net, PGD(net, num_steps=5, bounds=(0.0, 1.0)), data, torch.device("cpu"),
                                 eps_ladder=[0.5, 0.9], min_adversarial=1)
    assert list(found.attacked) == [0.5]  # 0.5 breaks this linear model's images: the ladder stops there
    assert found.adversarial.shape[0] >= 1 and bool((found.eps == 0.5).all())


def test_bad_arguments() -> None:
    net, data = _setup()
    with pytest.raises(ValueError, match="increasing"):
        collect_adversarials(net, PGD(net, bounds=(0.0, 1.0)), data, torch.device("cpu"), eps_ladder=[0.2, 0.1])
    with pytest.raises(ValueError, match="bounded attack"):
        collect_adversarials(net, lambda x, y: x, data, torch.device("cpu"), eps_ladder=[0.1])
    with pytest.raises(ValueError, match="min_adversarial"):
        collect_adversarials(net, lambda x, y: x, data, torch.device("cpu"), min_adversarial=0)
    empty = collect_adversarials(net, lambda x, y: x, [], torch.device("cpu"))
    assert empty.clean.shape[0] == 0 and empty.adversarial.shape[0] == 0
