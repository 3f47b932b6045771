# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Test helpers: tiny 2D/3D classifiers built with MONAI's factories, a quick trainer, and the input types."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_robust.networks import nets

__all__ = ["TEST_NDARRAYS", "SmallCNN", "train_classifier"]

TEST_NDARRAYS = (np.array, torch.as_tensor, MetaTensor)


def SmallCNN(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, width: int = 16) -> nn.Module:
    """The package's :class:`~monai_robust.networks.nets.SmallCNN` in the tests' size: conv-relu-pool x2, conv-relu
    with ``(width, 2 * width, 2 * width)`` channels, no norm, dropout 0.2 (fast on CPU, 2D or 3D, named layers)."""
    return nets.SmallCNN(spatial_dims, in_channels, num_classes, channels=(width, 2 * width, 2 * width), norm=None,
                         dropout=0.2)


def train_classifier(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 3, batch_size: int = 64, lr: float = 3e-3
) -> nn.Module:
    """Plain Adam training, seeded by the caller."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    n = images.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(net(images[idx]), labels[idx]).backward()
            opt.step()
    return net.eval()


def run_bundle(bundle: Path, configs: Sequence[str], bundle_root: Path, **overrides: Any) -> None:
    """Runs ``configs`` (file names in ``bundle/configs``) of a bundle through MONAI's ``ConfigWorkflow``, as
    ``python -m monai.bundle run --bundle_root bundle_root`` would, with ``overrides`` as command-line overrides."""
    from monai.bundle import ConfigWorkflow

    folder = Path(bundle) / "configs"
    wf = ConfigWorkflow(
        config_file=[str(folder / c) for c in configs],
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        workflow_type=None,
        bundle_root=str(bundle_root),
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
