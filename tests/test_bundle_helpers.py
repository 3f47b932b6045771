# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``BundlePredictor``, ``fit_guard`` and ``load_guard`` on a tiny trained 2D bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_robust.attacks import PGD
from monai_robust.bundle_helpers import BundlePredictor, fit_guard, load_guard
from monai_robust.data.datalist import load_datalist, loading_transforms
from monai_robust.detectors import DeepFeatureDetector, DetectorGuard

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "robust_xray_classification"


def test_predictor_matches_network_and_guard(trained_xray_bundle: tuple[Path, Path, dict]) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    p = BundlePredictor(bundle_dir, bundle_root=str(root), **overrides)
    assert p.class_names == ["normal", "lesion"] and p.spatial_dims == 2 and p.in_channels == 1
    assert p.name == "Robust chest X-ray classification" and p.version
    assert isinstance(p.guard, DetectorGuard) and not p.network.training

    # a phantom read as the bundle reads it: preprocess(raw) equals the bundle's own loading transforms
    item = load_datalist(root / "data" / "dataset.json", "test")[0]
    raw = loading_transforms("image")(dict(item))["image"]
    expected = loading_transforms("image", p.intensity_map)(dict(item))["image"]
    x = p.preprocess(raw)
    torch.testing.assert_close(x, torch.as_tensor(expected).as_subclass(torch.Tensor).float())
    out = p(raw)
    with torch.no_grad():
        prob = torch.softmax(p.network(x[None]), 1)[0]
    assert out["probabilities"] == pytest.approx(dict(zip(p.class_names, prob.tolist())), abs=1e-6)
    assert out["predicted_index"] == int(prob.argmax()) and out["predicted_class"] == p.class_names[int(prob.argmax())]
    g = out["guard"]
    assert g["adversarial_suspected"] == (g["score"] > g["threshold"])

    # other sizes are resized, a (C, H, W, 1) slice is squeezed
    assert p.preprocess(np.full((1, 50, 40, 1), 1000.0)).shape == (1, 32, 32)


def test_predictor_bad_input(trained_xray_bundle: tuple[Path, Path, dict], tmp_path: Path) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    p = BundlePredictor(bundle_dir, bundle_root=str(root), **overrides)
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        p.preprocess(np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match="NaN"):
        p.preprocess(np.full((1, 32, 32), np.nan))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        BundlePredictor(bundle_dir, bundle_root=str(tmp_path), ckpt_file=tmp_path / "none.pt", **overrides)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        BundlePredictor(bundle_dir, config_files=[bundle_dir / "configs" / "nope.json"])
    # without a fitted guard the predictor still predicts, with no verdict
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("guard.pt"))
    assert BundlePredictor(bundle_dir, bundle_root=str(bare), **overrides).guard is None


def test_fit_and_load_guard(trained_xray_bundle: tuple[Path, Path, dict], tmp_path: Path) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    p = BundlePredictor(bundle_dir, bundle_root=str(root), **overrides)
    data = [(p.preprocess(np.random.default_rng(i).uniform(0, 4095, (1, 32, 32)))[None], torch.tensor([i % 2]))
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
    with pytest.raises(ValueError, match="at least 4 clean images.*has 3"):
        fit_guard(guard, PGD(p.network, eps=0.3, bounds=(0.0, 1.0)), data[:4], [x for x, _ in data[5:]])
    with pytest.raises(ValueError, match="no images"):
        fit_guard(guard, lambda x, y: x, [], [])
