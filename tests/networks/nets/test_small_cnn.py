# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import io

import pytest
import torch
from monai.networks import eval_mode

from monai_robust.networks import SmallCNN, insert_blocks
from monai_robust.networks.blocks.sparse_denoise import TopKSparsify

CASES = [  # (kwargs, input shape)
    ({}, (3, 1, 28, 28)),
    ({"in_channels": 3, "num_classes": 5, "channels": (8, 8)}, (2, 3, 16, 20)),
    ({"spatial_dims": 3, "channels": (4, 8, 8), "norm": None, "dropout": 0.2, "downsample": "stride"}, (2, 1, 12, 12, 12)),
    ({"spatial_dims": 3, "channels": (4,), "downsample": "pool"}, (1, 1, 8, 8, 8)),
]


@pytest.mark.parametrize("kwargs,shape", CASES)
def test_shape(kwargs, shape):
    net = SmallCNN(**kwargs)
    with eval_mode(net):
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], kwargs.get("num_classes", 2))
    assert torch.isfinite(out).all()


def test_default_is_the_tutorial_model():
    net = SmallCNN()
    # conv-BN-ReLU-pool x2, conv-BN-ReLU: the first two poolings are features.3 and features.7
    assert [type(m).__name__ for m in net.features] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2 + [
        "Conv2d", "BatchNorm2d", "ReLU"]
    assert 20_000 < sum(p.numel() for p in net.parameters()) < 30_000  # "about 25k parameters"
    insert_blocks(net, ["features.3", "features.7"], TopKSparsify, example_input=torch.zeros(1, 1, 28, 28))
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_stride_halves_without_pooling():
    net = SmallCNN(3, channels=(4, 8, 8), downsample="stride")
    assert not any(isinstance(m, torch.nn.MaxPool3d) for m in net.modules())
    assert net.features[:-3](torch.rand(1, 1, 16, 16, 16)).shape[2:] == (4, 4, 4)  # two stride-2 stages


def test_dropout_only_in_training():
    net = SmallCNN(channels=(4, 8), dropout=0.5)
    x = torch.rand(4, 1, 8, 8)
    net.eval()
    assert torch.equal(net(x), net(x))
    assert isinstance(SmallCNN(dropout=0.0).dropout, torch.nn.Identity)


def test_script():
    net = SmallCNN(channels=(4, 8)).eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(torch.jit.load(buf)(x), net(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"spatial_dims": 1}, {"in_channels": 0}, {"num_classes": 1.5}, {"channels": ()}, {"channels": (8, 0)},
     {"norm": "instance"}, {"dropout": 1.0}, {"dropout": -0.1}, {"downsample": "average"}],
)
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        SmallCNN(**kwargs)
