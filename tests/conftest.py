# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Shared fixtures: the one way tests reach ``../shared/data``, and small models trained on real images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.utils import SmallCNN, run_bundle, train_classifier

torch.set_num_threads(int(os.environ.get("MONAI_ROBUST_TEST_THREADS", 1)))
# attacks run in bf16 by default where the CPU has native bf16: the suite pins fp32 so that its numbers do not depend
# on the machine (MONAI_ROBUST_FP32=0 runs it with the default); tests/attacks/test_precision.py covers mixed precision
os.environ.setdefault("MONAI_ROBUST_FP32", "1")

SHARED_DATA = Path(os.environ.get("MONAI_ROBUST_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SHARED_BUNDLES = SHARED_DATA.parent / "bundles"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (override with ``MONAI_ROBUST_SHARED_DATA``)."""
    if not (SHARED_DATA / "pneumoniamnist.npz").is_file():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}: clone the project next to the 'shared' folder "
            "(../shared/data) or set MONAI_ROBUST_SHARED_DATA.",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_bundles() -> Path:
    """``../shared/bundles``: model-zoo bundles exactly as the zoo publishes them (configs only, no weights)."""
    if not (SHARED_BUNDLES / "classification_template" / "configs").is_dir():
        pytest.fail(f"zoo bundles not found at {SHARED_BUNDLES}: clone the project next to 'shared'.", pytrace=False)
    return SHARED_BUNDLES


@pytest.fixture(scope="session")
def pneumonia(shared_data: Path) -> dict[str, torch.Tensor]:
    """PneumoniaMNIST as float tensors in [0, 1], ``(N, 1, 28, 28)``, labels ``(N,)`` long."""
    import numpy as np

    with np.load(shared_data / "pneumoniamnist.npz") as f:
        out = {}
        for split in ("train", "val", "test"):
            out[f"{split}_images"] = torch.from_numpy(f[f"{split}_images"]).float().div(255).unsqueeze(1)
            out[f"{split}_labels"] = torch.from_numpy(f[f"{split}_labels"]).long().reshape(-1)
    return out


@pytest.fixture(scope="session")
def pneumonia_model(pneumonia: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A small CNN trained on PneumoniaMNIST's train split (a few seconds on CPU), in eval mode."""
    torch.manual_seed(0)
    net = SmallCNN(spatial_dims=2, in_channels=1, num_classes=2)
    train_classifier(net, pneumonia["train_images"], pneumonia["train_labels"], epochs=3)
    return net.eval()


XRAY_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "robust_xray_classification"
# guard_fpr / guard_eps: the tiny validation split holds ~4 images (a 5 % FPR needs 20), and a 1-epoch model changes no
# prediction at the default 2/255 budget of the guard's fitting attack
TINY_XRAY = {"num_images": 24, "image_size": 32, "batch_size": 8, "guard_fpr": 0.25, "guard_eps": 0.25}


@pytest.fixture(scope="session")
def trained_xray_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The 2D bundle trained for one epoch on 24 embedded phantoms, with a fitted detector guard (about 10 s).

    Returns:
        ``(bundle_dir, bundle_root, overrides)``: configs in ``bundle_dir``, ``models/``, ``data/`` under
        ``bundle_root``; pass ``bundle_root=..., **overrides`` to ``BundlePredictor`` or ``ConfigWorkflow``.
    """
    root = tmp_path_factory.mktemp("xray_bundle")
    run_bundle(XRAY_BUNDLE, ["train.json", "guard.json"], root, num_epochs=1, **TINY_XRAY)
    return XRAY_BUNDLE, root, dict(TINY_XRAY)
