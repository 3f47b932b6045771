# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``fit_guard`` and ``load_guard`` on a tiny trained 2D bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from monai_robust.attacks import PGD
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.detectors import DeepFeatureDetector, DetectorGuard
from monai_robust.detectors.guard import fit_guard, load_guard

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "robust_xray_classification"


def test_fit_and_load_guard(trained_xray_bundle: tuple[Path, Path, dict], tmp_path: Path) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    p = BundlePredictor(bundle_dir, bundle_root=str(root), **overrides)
    data = [(p.model.to_model_units(p.preprocess(np.random.default_rng(i).uniform(0, 4095, (1, 32, 32)))[None]), torch.tensor([i % 2]))
            for i in range(8)]
    layers = ["class_layers.relu", "class_layers.out"]
    guard = DetectorGuard(DeepFeatureDetector(p.network, layers), fpr=0.25)
    fit_guard(guard, PGD(p.network, eps=0.3, bounds=(0.0, 1.0)), data[:4], [x for x, _ in data[4:]], tmp_path / "g.pt")
    again = load_guard(DetectorGuard(DeepFeatureDetector(p.network, layers), fpr=0.25), tmp_path / "g.pt")
    x = torch.cat([x for x, _ in data])
    assert again.verdicts(x) == guard.verdicts(x)
    assert load_guard(DetectorGuard(DeepFeatureDetector(p.network, layers)), tmp_path / "missing.pt") is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_guard(guard, tmp_path / "missing.pt", required=True)
    with pytest.raises(ValueError, match="changed no prediction"):
        fit_guard(guard, lambda x, y: x, data[:4], [x for x, _ in data[4:]])
    with pytest.raises(ValueError, match="at least 3 clean images.*has 2"):  # conformal minimum at fpr 0.25
        fit_guard(guard, PGD(p.network, eps=0.3, bounds=(0.0, 1.0)), data[:4], [x for x, _ in data[5:]][:2])
    with pytest.raises(ValueError, match="no images"):
        fit_guard(guard, lambda x, y: x, [], [])
