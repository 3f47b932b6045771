# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Fixtures for the detector tests: PGD-attacked PneumoniaMNIST images, tiny 2D/3D synthetic sets, and one factory
per detector (the table the contract tests run over)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from monai_robust.attacks.pgd import PGD
from monai_robust.detectors.base import Detector
from monai_robust.detectors.deep_features import DeepFeatureDetector
from monai_robust.detectors.kd_bu import KDBUDetector
from monai_robust.detectors.lid import LIDDetector
from monai_robust.detectors.mahalanobis import MahalanobisDetector

SMALL_LAYERS = ("features.1", "features.4", "features.7", "fc")  # SmallCNN: the three ReLUs and the logits

# name -> factory(network, layers, last_hidden_layer) -> Detector, with settings small enough for 24 fitting images
DETECTORS: dict[str, Callable[[nn.Module, tuple[str, ...], str], Detector]] = {
    "kd_bu": lambda net, layers, last: KDBUDetector(net, (last,), num_samples=8),
    "lid": lambda net, layers, last: LIDDetector(net, layers, k=5, batch_size=12),
    "mahalanobis": lambda net, layers, last: MahalanobisDetector(net, layers),
    "mahalanobis_noise": lambda net, layers, last: MahalanobisDetector(net, layers, noise=0.002),
    "deep_features": lambda net, layers, last: DeepFeatureDetector(net, layers, hidden_units=16),
}

# name -> (factory(network) for the pneumonia_model, the AUC it must exceed on PGD 16/255), fitted on 100 clean + 100
# PGD images and scored on 100 + 100 others. Observed: KD+BU 0.87, LID 0.83, Mahalanobis 0.93 (0.93 with noise),
# deep features 0.997.
PNEUMONIA_AUC: dict[str, tuple[Callable[[nn.Module], Detector], float]] = {
    "kd_bu": (lambda net: KDBUDetector(net, ("pool",), num_samples=10), 0.8),
    "lid": (lambda net: LIDDetector(net, SMALL_LAYERS), 0.75),
    "mahalanobis": (lambda net: MahalanobisDetector(net, SMALL_LAYERS), 0.85),
    "mahalanobis_noise": (lambda net: MahalanobisDetector(net, SMALL_LAYERS, noise=0.002), 0.85),
    "deep_features": (lambda net: DeepFeatureDetector(net, SMALL_LAYERS), 0.95),
}


def scores(detector: Detector, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Detector scores without gradients where the detector allows it; seeded (Monte-Carlo dropout)."""
    torch.manual_seed(seed)
    needs_grad = getattr(detector, "noise", 0.0) > 0
    with torch.enable_grad() if needs_grad else torch.no_grad():
        return detector(images).detach()


def balance_predictions(logits_layer: nn.Linear, network: nn.Module, images: torch.Tensor) -> None:
    """Shifts the class-1 bias of a random two-class network so it predicts both classes on ``images``."""
    with torch.no_grad():
        logits = network(images)
        logits_layer.bias[1] += (logits[:, 0] - logits[:, 1]).median() + 1e-4


@pytest.fixture(scope="session")
def pneumonia_pgd(pneumonia: dict[str, torch.Tensor], pneumonia_model: nn.Module) -> dict[str, torch.Tensor]:
    """200 PneumoniaMNIST test images and their PGD (L-inf 16/255, 10 steps) versions; fit on the first 100."""
    x, y = pneumonia["test_images"][:200], pneumonia["test_labels"][:200]
    attack = PGD(pneumonia_model, 16 / 255, num_steps=10, bounds=(0.0, 1.0))
    attack.set_random_state(0)
    adv = attack(x, y)
    return {"clean": x, "adv": adv, "labels": y}


@pytest.fixture(scope="session")
def synthetic() -> Callable[[int], dict[str, torch.Tensor]]:
    """Tiny images of a given spatial rank: dark and bright noisy blobs (clean), the same with noise added
    ("adversarial"), 24 of each; for contract tests, not for AUCs."""

    def make(spatial_dims: int, size: int = 8) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(spatial_dims)
        shape = (24, 1) + (size,) * spatial_dims
        level = torch.linspace(0.2, 0.8, 24).reshape((24,) + (1,) * (spatial_dims + 1))
        clean = (level + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)
        adv = (clean + 0.1 * torch.randn(shape, generator=g).sign()).clamp(0, 1)
        return {"clean": clean, "adv": adv}

    return make
