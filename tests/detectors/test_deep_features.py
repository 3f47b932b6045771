# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.detectors.deep_features import DeepFeatureDetector
from tests.detectors.conftest import SMALL_LAYERS
from tests.utils import SmallCNN


@pytest.mark.parametrize("hidden_units", [0, 16])
def test_features_and_classifier(hidden_units, synthetic):
    data = synthetic(3)
    net = SmallCNN(3, 1, 2, width=4).eval()
    det = DeepFeatureDetector(net, SMALL_LAYERS, hidden_units=hidden_units).fit(data["clean"], data["adv"])
    with torch.no_grad():
        feats = det.features(data["clean"][:3])
        assert feats.shape == (3, 4 + 8 + 8 + 2)
        torch.testing.assert_close(det(data["clean"][:3]), det.classifier(feats))
    assert (det.classifier.hidden_weight.numel() > 0) == bool(hidden_units)


def test_separates_obvious_noise(synthetic):
    data = synthetic(2)
    net = SmallCNN(2, 1, 2, width=8).eval()
    det = DeepFeatureDetector(net, SMALL_LAYERS).fit(data["clean"][::2], data["adv"][::2])
    with torch.no_grad():
        assert float(det(data["adv"][1::2]).mean()) > float(det(data["clean"][1::2]).mean())


def test_bad_args():
    for kwargs in ({"hidden_units": -1}, {"l2": -1.0}, {"max_iter": 0}):
        with pytest.raises(ValueError):
            DeepFeatureDetector(SmallCNN(2, 1, 2), ("fc",), **kwargs)
