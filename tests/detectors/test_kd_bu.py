# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest
import torch

from monai_robust.detectors.kd_bu import KDBUDetector, mc_dropout, nearest_neighbour_bandwidth
from tests.detectors.conftest import balance_predictions
from tests.utils import SmallCNN


@pytest.fixture
def fitted(synthetic):
    data = synthetic(2)
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2, width=8).eval()
    balance_predictions(net.fc, net, data["clean"])
    return net, data, KDBUDetector(net, ("pool",), num_samples=8).fit(data["clean"], data["adv"])


def test_log_density_matches_definition(fitted):
    _, data, det = fitted
    feats = det.reference[:3] + 0.05 * torch.randn(3, det.reference.shape[1])
    classes = torch.tensor([0, 1, 1])
    h = float(det.kernel_bandwidth)
    for i in range(3):
        ref = det.reference[det.reference_classes == classes[i]]
        log_k = (-((feats[i] - ref) ** 2).sum(1) / (2 * h * h)).double()
        expected = float(torch.logsumexp(log_k, 0)) - math.log(ref.shape[0])  # log of the mean kernel value
        got = float(det.log_density(feats, classes)[i])
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_leave_one_out(fitted):
    _, _, det = fitted
    ref, cls = det.reference[:4], det.reference_classes[:4]
    loo = det.log_density(ref, cls, leave_out=torch.arange(4))
    full = det.log_density(ref, cls)
    assert bool((loo < full).all())  # leaving the point itself out lowers its density


def test_dropout_restored_and_uncertainty(fitted):
    net, data, det = fitted
    net.dropout.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        u = det.uncertainty(data["clean"][:6])
    assert u.shape == (6,) and bool((u >= -1e-6).all()) and float(u.max()) > 0
    assert not net.dropout.training and not net.training
    net.train()
    with mc_dropout(net) as drops:
        assert drops == [net.dropout]
    assert net.training and all(m.training for m in net.modules())
    net.eval()


def test_kd_only(fitted):
    net, data, _ = fitted
    det = KDBUDetector(net, ("pool",), num_samples=0, bandwidth=0.5).fit(data["clean"], data["adv"])
    assert det.statistics(data["clean"][:2]).shape == (2, 1)
    assert float(det.kernel_bandwidth) == 0.5


def test_nearest_neighbour_bandwidth():
    f = torch.tensor([[0.0], [1.0], [3.0], [10.0], [14.0]])
    assert nearest_neighbour_bandwidth(f, torch.tensor([0, 0, 0, 1, 1])) == pytest.approx(2.0)


def test_bad_args(synthetic):
    net = SmallCNN(2, 1, 2)
    with pytest.raises(ValueError, match="one layer"):
        KDBUDetector(net, ("pool", "fc"))
    with pytest.raises(ValueError, match="bandwidth"):
        KDBUDetector(net, ("pool",), bandwidth=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        KDBUDetector(net, ("pool",), num_samples=-1)
    no_dropout = SmallCNN(2, 1, 2)
    no_dropout.dropout = torch.nn.Dropout(0.0)
    with pytest.raises(ValueError, match="rate 0"):
        KDBUDetector(no_dropout, ("pool",))
    KDBUDetector(no_dropout, ("pool",), num_samples=0)  # KD alone needs no dropout


def test_class_without_clean_images(synthetic):
    data = synthetic(2)
    net = SmallCNN(2, 1, 2).eval()
    with torch.no_grad():
        net.fc.bias.copy_(torch.tensor([100.0, -100.0]))  # every image predicted class 0
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        KDBUDetector(net, ("pool",), num_samples=0).fit(data["clean"], data["adv"])
