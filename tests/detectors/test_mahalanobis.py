# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.detectors.mahalanobis import MahalanobisDetector, mahalanobis_distance
from tests.detectors.conftest import SMALL_LAYERS, balance_predictions
from tests.utils import SmallCNN


def test_distance():
    d = mahalanobis_distance(torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.diag(torch.tensor([1.0, 0.25])))
    torch.testing.assert_close(d, torch.tensor([[1.0, 1.0]]))


@pytest.fixture
def net_data(synthetic):
    data = synthetic(2)
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2, width=4).eval()
    balance_predictions(net.fc, net, data["clean"])
    return net, data


def test_gaussians_match_class_statistics(net_data):
    net, data = net_data
    det = MahalanobisDetector(net, ("pool",), ridge=0.0).fit(data["clean"], data["adv"])
    with torch.no_grad():
        logits = net(data["clean"])
        feats = net.pool(net.features(data["clean"])).flatten(1)
    cls = logits.argmax(1)
    means, precision = det.gaussians()[0]
    for c in (0, 1):
        torch.testing.assert_close(means[c], feats[cls == c].mean(0), rtol=1e-4, atol=1e-5)
    centred = feats - means[cls]
    cov = centred.T @ centred / feats.shape[0]
    torch.testing.assert_close(precision, torch.linalg.pinv(cov.double(), hermitian=True).float(), rtol=1e-3, atol=1e-3)


def test_noise_preprocessing(net_data):
    net, data = net_data
    plain = MahalanobisDetector(net, SMALL_LAYERS).fit(data["clean"], data["adv"])
    noisy = MahalanobisDetector(net, SMALL_LAYERS, noise=0.01)
    noisy.load_state_dict(plain.state_dict())  # same Gaussians; pre-processing only moves inputs closer to them
    with torch.no_grad():
        m0 = plain.confidence(data["clean"])
        m1 = noisy.confidence(data["clean"])
    assert float((m1 - m0).mean()) > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        noisy(data["clean"])
    assert all(p.grad is None for p in net.parameters())


def test_unseen_class_is_ignored(net_data):
    net, data = net_data
    with torch.no_grad():
        net.fc.bias.copy_(torch.tensor([100.0, -100.0]))  # every clean image predicted class 0
    det = MahalanobisDetector(net, ("pool", "fc")).fit(data["clean"], data["adv"])
    assert det.class_mask.tolist() == [True, False]
    with torch.no_grad():
        assert bool(torch.isfinite(det(data["adv"])).all())


def test_bad_args():
    net = SmallCNN(2, 1, 2)
    for kwargs in ({"noise": -0.1}, {"ridge": -1.0}, {"pooling": "max"}):
        with pytest.raises(ValueError):
            MahalanobisDetector(net, ("fc",), **kwargs)
