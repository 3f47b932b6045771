# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.detectors.lid import LIDDetector, lid_mle
from tests.detectors.conftest import SMALL_LAYERS
from tests.utils import SmallCNN


@pytest.mark.parametrize("dim", [2, 6])
def test_lid_mle_recovers_dimension(dim):
    g = torch.Generator().manual_seed(dim)
    ref = torch.zeros(4000, 10)
    ref[:, :dim] = torch.rand(4000, dim, generator=g)  # a dim-dimensional cube inside 10-D space
    queries = torch.zeros(200, 10)
    queries[:, :dim] = 0.25 + 0.5 * torch.rand(200, dim, generator=g)
    est = lid_mle(queries, ref, k=50).mean()
    assert abs(float(est) - dim) < 0.2 * dim


def test_lid_mle_self_exclusion_and_batching():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 30, 4, generator=g)  # 3 minibatches
    with_self = lid_mle(ref, ref, k=5, self_index=torch.arange(30).expand(3, 30))
    assert with_self.shape == (3, 30) and bool(torch.isfinite(with_self).all())
    for b in range(3):  # batched == one minibatch at a time
        torch.testing.assert_close(with_self[b], lid_mle(ref[b], ref[b], 5, torch.arange(30)))
    # without exclusion each point is its own nearest neighbour (distance 0): a small LID, never inf
    own = lid_mle(ref[0], ref[0], k=5)
    assert bool(torch.isfinite(own).all()) and float(own.max()) < float(with_self[0].min())


def test_reference_set_and_every_clean_image_scored(synthetic):
    data = synthetic(2)
    net = SmallCNN(2, 1, 2, width=4).eval()
    det = LIDDetector(net, SMALL_LAYERS, k=5, batch_size=10).fit(data["clean"], data["adv"][:7])
    assert [r.shape for r in det.references()] == [(10, 4), (10, 8), (10, 8), (10, 2)]
    with torch.no_grad():
        lid = det.lid(data["adv"])
    assert lid.shape == (24, 4) and bool((lid > 0).all())


def test_bad_args(synthetic):
    net = SmallCNN(2, 1, 2)
    for kwargs in ({"k": 0}, {"k": 20, "batch_size": 20}, {"batch_size": 2.5}):
        with pytest.raises(ValueError):
            LIDDetector(net, ("fc",), **kwargs)
    data = synthetic(2)
    with pytest.raises(ValueError, match="at least batch_size=100"):
        LIDDetector(net, ("fc",)).fit(data["clean"], data["adv"])
