# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Channels-last for the duration of an attack or a UAP fit, the caller's tensors given back."""

from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.layout import channels_last, channels_last_format
from tests.utils import SmallCNN


def _net(dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN(dims, 1, 3).eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_converts_then_gives_back_the_same_tensors(dims):
    net, x = _net(dims), torch.rand((4, 1) + (8,) * dims)
    before = {name: (t, t.data_ptr(), t.stride()) for name, t in net.state_dict(keep_vars=True).items()}
    ref = net(x)
    fmt = channels_last_format(x.ndim)
    with channels_last(net, x.ndim) as got:
        assert got == fmt
        convs = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
        # even the one-input-channel convolution gets channels-last strides (it decides the layout of the rest)
        assert convs and all(w.stride() == torch.empty_like(w, memory_format=fmt).stride() for w in convs)
        assert torch.allclose(net(x), ref, atol=1e-5)
    for name, t in net.state_dict(keep_vars=True).items():
        obj, ptr, stride = before[name]
        assert t is obj and t.data_ptr() == ptr and t.stride() == stride  # the same parameter, memory and strides


def test_restores_on_error_and_ignores_other_ranks():
    net = _net(2)
    strides = [p.stride() for p in net.parameters()]
    with pytest.raises(RuntimeError, match="boom"), channels_last(net, 4):
        raise RuntimeError("boom")
    assert [p.stride() for p in net.parameters()] == strides
    with channels_last(net, 0) as fmt:
        assert fmt is None and [p.stride() for p in net.parameters()] == strides
    assert channels_last_format(3) is None and channels_last_format(4) == torch.channels_last
