# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Fixtures of the attack tests: test images the trained model gets right, and tiny input-sensitive 2D/3D nets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.networks.layers.factories import Conv
from torch import nn

from tests.utils import SmallCNN, train_classifier


@pytest.fixture(scope="session")
def pneumonia_correct(pneumonia: dict[str, torch.Tensor], pneumonia_model: nn.Module) -> dict[str, torch.Tensor]:
    """The first 128 PneumoniaMNIST test images and labels, and the subset the trained model classifies correctly
    (``images``/``labels``): success rates and norms of minimal-perturbation attacks are measured there."""
    x, y = pneumonia["test_images"][:128], pneumonia["test_labels"][:128]
    with torch.no_grad():
        ok = pneumonia_model(x).argmax(dim=1) == y
    return {"all_images": x, "all_labels": y, "images": x[ok], "labels": y[ok]}


@pytest.fixture
def tiny_net() -> Callable[[int, int], nn.Module]:
    """``tiny_net(spatial_dims, classes)``: conv-tanh-linear on ``(N, 1, 8, ..., 8)`` inputs, seeded, eval mode.

    Unlike a randomly initialised pooled CNN, its logits depend strongly on the input, so minimal-perturbation
    attacks have a boundary to find inside the [0, 1] box."""

    def make(spatial_dims: int, classes: int) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            Conv[Conv.CONV, spatial_dims](1, 4, 3, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(4 * 8**spatial_dims, classes),
        ).eval()

    return make


@pytest.fixture(scope="session")
def rotation(pneumonia: dict[str, torch.Tensor]) -> dict:
    """A 4-class task on real images: which multiple of 90 degrees a PneumoniaMNIST image was rotated by. A small CNN
    trained 3 epochs on 2000 training images (a few seconds; test accuracy about 0.75) and 128 rotated test images
    with their labels: for attacks whose reference implementations need more than 2 classes (APGD-T, AutoAttack)."""

    def rotate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.arange(len(x)) % 4
        return torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)]), k

    torch.manual_seed(0)
    net = SmallCNN(spatial_dims=2, in_channels=1, num_classes=4)
    train_classifier(net, *rotate(pneumonia["train_images"][:2000]), epochs=3)
    images, labels = rotate(pneumonia["test_images"][:128])
    return {"model": net.eval(), "images": images, "labels": labels}
