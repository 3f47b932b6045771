# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import copy
import io
from functools import partial

import pytest
import torch
from monai.networks.blocks.squeeze_and_excitation import SEResNetBottleneck
from monai.networks.nets import DenseNet, DenseNet121, EfficientNetBN, ResNet, SENet, resnet18

from monai_robust.networks.blocks.nonlocal_denoise import NonLocalDenoise
from monai_robust.networks.blocks.sparse_denoise import MeanCentredSparsify, SoftThreshold, TopKSparsify
from monai_robust.networks.utils import WithBlock, candidate_insertion_points, insert_blocks, straight_through_mode
from tests.utils import SmallCNN

NETWORKS = [  # (factory, example input, insertion points)
    (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), (1, 1, 32, 32),
     ["features.denseblock1", "features.transition2"]),
    (lambda: resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), (1, 1, 32, 32), ["layer1", "layer2.0"]),
    (lambda: EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1, num_classes=2),
     (1, 1, 32, 32), ["_blocks.1", "_blocks.4"]),
    (lambda: DenseNet(3, 1, 2, init_features=8, growth_rate=4, block_config=(2, 2)), (1, 1, 16, 16, 16),
     ["features.denseblock1", "features.norm5"]),
    (lambda: ResNet("basic", (1, 1, 1, 1), (8, 8, 16, 16), spatial_dims=3, n_input_channels=1, num_classes=2),
     (1, 1, 16, 16, 16), ["layer1", "layer2"]),
    (lambda: SENet(3, 1, SEResNetBottleneck, (1, 1, 1, 1), groups=1, reduction=4, inplanes=16, input_3x3=False,
                   downsample_kernel_size=1, num_classes=2), (1, 1, 16, 16, 16), ["layer1", "layer2.0"]),
]


@pytest.mark.parametrize("make,shape,names", NETWORKS)
def test_insert_keeps_weights_and_runs(make, shape, names):
    torch.manual_seed(0)
    net = make().eval()
    original = copy.deepcopy(net.state_dict())
    again = copy.deepcopy(net)
    x = torch.rand(shape)
    with torch.no_grad():
        before = net(x)
    points = dict(candidate_insertion_points(net, x))
    assert all(n in points for n in names)
    calls = []
    insert_blocks(net, names, partial(NonLocalDenoise, affinity="dot"), example_input=x)
    for name in names:
        wrapped = net.get_submodule(name)
        assert isinstance(wrapped, WithBlock) and wrapped.block.in_channels == points[name][1]
        wrapped.block.register_forward_hook(lambda *a: calls.append(1))
    assert net.load_state_dict(original, strict=True).missing_keys == []  # the original checkpoint, strictly
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)  # identity-initialised blocks, original weights
    assert len(calls) == len(names)
    insert_blocks(again, names, partial(NonLocalDenoise, affinity="dot"), example_input=x)
    assert again.load_state_dict(net.state_dict(), strict=True).missing_keys == []  # the modified checkpoint


def test_sparsifier_changes_output_and_scripts():
    torch.manual_seed(0)
    net = DenseNet(2, 1, 2, init_features=8, growth_rate=4, block_config=(2, 2)).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        before = net(x)
    insert_blocks(net, ["features.denseblock1", "features.transition1.conv"], partial(TopKSparsify, k=0.2),
                  example_input=x[:1])
    with torch.no_grad():
        assert not torch.allclose(net(x), before)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    assert torch.allclose(torch.jit.load(buffer)(x), net(x), atol=1e-5)


def test_static_inference_and_nested_insertion():
    net = SmallCNN(3, 1, 2)
    sd = copy.deepcopy(net.state_dict())
    insert_blocks(net, ["features.0", "features.3"], partial(SoftThreshold, mode="learnable"))  # from the convs
    assert net.features[0].block.in_channels == 16 and net.features[0].block.spatial_dims == 3
    insert_blocks(net, "features", partial(MeanCentredSparsify, alpha=0.3), example_input=torch.rand(1, 1, 8, 8, 8))
    assert net.load_state_dict(sd).missing_keys == []  # nested wrappers still read the original keys
    assert "features.module.0.module.weight" in net.state_dict()
    assert "features.module.0.block.lambd" in net.state_dict()
    assert net(torch.rand(2, 1, 8, 8, 8)).shape == (2, 2)


def test_bad_input():
    net = SmallCNN(2, 1, 2)
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"unknown module name 'features\.9'.*features\.[0-8]"):
        insert_blocks(net, ["features.9"], TopKSparsify, example_input=x)
    with pytest.raises(ValueError, match="'fc'.*feature map"):
        insert_blocks(net, ["fc"], TopKSparsify, example_input=x)
    with pytest.raises(ValueError, match="in_channels=3 but module 'features.0' outputs 16"):
        insert_blocks(net, ["features.0"], lambda spatial_dims, in_channels: TopKSparsify(spatial_dims, 3))
    with pytest.raises(ValueError, match="does not accept the output of module 'features.0'"):
        insert_blocks(net, ["features.0"], lambda spatial_dims, in_channels: torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)),
                      example_input=x)
    with pytest.raises(ValueError, match="nn.Module"):
        insert_blocks(net, ["features.0"], lambda spatial_dims, in_channels: None, example_input=x)
    with pytest.raises(ValueError, match="more than once"):
        insert_blocks(net, ["features.0", "features.0"], TopKSparsify, example_input=x)
    with pytest.raises(ValueError, match="example_input"):
        insert_blocks(net, ["features.1"], TopKSparsify)  # a ReLU has no channel attribute
    shared = torch.nn.ReLU()
    twice = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), shared, torch.nn.Conv2d(2, 2, 1), shared)
    with pytest.raises(ValueError, match="called 2 times"):
        insert_blocks(twice, ["1"], TopKSparsify, example_input=x)
    assert "1" not in dict(candidate_insertion_points(twice, x))
    assert isinstance(net.features[0], torch.nn.Conv2d)  # nothing was changed by the failed calls


def test_straight_through_mode_restores():
    net = SmallCNN(2, 1, 2)
    insert_blocks(net, ["features.1", "features.4"], partial(TopKSparsify, k=0.1), example_input=torch.rand(1, 1, 8, 8))
    net.features[4].block.straight_through = True
    with straight_through_mode(net):
        assert net.features[1].block.straight_through and net.features[4].block.straight_through
    assert not net.features[1].block.straight_through and net.features[4].block.straight_through
