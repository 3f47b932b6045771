# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``BundlePredictor`` on a tiny trained 2D bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_robust.bundle_helpers import BundlePredictor
from monai_robust.data.datalist import load_datalist, loading_transforms
from monai_robust.detectors import DetectorGuard

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


def test_predictor_names_corrupt_files_and_unknown_overrides(trained_xray_bundle: tuple[Path, Path, dict], tmp_path: Path) -> None:
    from monai_robust.dicom import main as cli_main
    from monai_robust.utils.files import CorruptFileError

    bundle_dir, root, overrides = trained_xray_bundle
    with pytest.raises(ValueError, match=r"'image_sise' \(did you mean 'image_size'"):
        BundlePredictor(bundle_dir, bundle_root=str(root), image_sise=16, **overrides)
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    model = broken / "models" / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a copy cut off half-way
    with pytest.raises(CorruptFileError, match=r"checkpoint '.*model\.pt'"):
        BundlePredictor(bundle_dir, bundle_root=str(broken), **overrides)
    (broken / "models" / "guard.pt").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"guard file '.*guard\.pt' is empty"):
        BundlePredictor(bundle_dir, bundle_root=str(broken), ckpt_file=root / "models" / "model.pt", **overrides)

    (tmp_path / "in").mkdir()
    tiny = [f"{k}={v}" for k, v in overrides.items()]
    args = ["screen", "--bundle", str(bundle_dir), "--bundle-root", str(broken), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), "--quiet", "--override", *tiny]
    assert cli_main(args) == 2  # a corrupt checkpoint: a usage error naming the file, no traceback
    args[args.index(str(broken))] = str(root)
    assert cli_main([*args, "image_sise=16"]) == 2
