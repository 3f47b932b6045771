# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The MONAI Label classification task, called as MONAI Label calls it (``task(request)`` through the real
``BasicInferTask``) on a tiny trained X-ray bundle: phantom DICOM, the same image as NIfTI, a real CR radiograph, the
robustness search, and bad input. Without ``monailabel`` only the import guard is tested."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

import monai_robust.integrations.monailabel as ml
from monai_robust.attacks import PGD
from monai_robust.data.datalist import load_datalist, load_image
from tests.integrations.orthanc import missing_prerequisite

INSTALL = "monailabel is not importable: `pip install --no-deps -r requirements-monailabel.txt` to run these tests"


@pytest.fixture
def requires_monailabel() -> None:
    """Skips without monailabel, with the reason; fails on CI, which installs it."""
    if not ml.has_monailabel:
        missing_prerequisite(INSTALL)


needs_monailabel = pytest.mark.usefixtures("requires_monailabel")
FAST = {"robustness_steps": 5, "robustness_rel_tol": 0.1}  # robustness search settings that keep a call ~3 s


@pytest.fixture(scope="module")
def predictor(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Any:
    from monai_robust.bundle.predictor import BundlePredictor

    bundle_dir, _, overrides = trained_xray_bundle
    return BundlePredictor(bundle_dir, device="cpu", **overrides)


@pytest.fixture(scope="module")
def task(predictor: Any) -> Any:
    if not ml.has_monailabel:
        missing_prerequisite(INSTALL)
    return ml.RobustClassificationInferTask(predictor)


@pytest.fixture(scope="module")
def phantom_dicom(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Path:
    _, root, _ = trained_xray_bundle
    return Path(load_datalist(root / "data" / "dataset.json", "test")[0]["image"])


def _check_contract(result: dict[str, Any], class_names: list[str]) -> None:
    json.dumps(result, default=str)  # MONAI Label returns it as JSON
    assert [p["label"] for p in result["prediction"]] == class_names  # MONAI Label's ClassificationWriter part
    assert set(result["probabilities"]) == set(class_names)
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert result["predicted_label"] == class_names[result["predicted_index"]]
    assert result["predicted_label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["model"]["name"] == "Robust chest X-ray classification" and result["model"]["version"]
    assert result["label_names"] == class_names and "latencies" in result


def test_import_guard_without_monailabel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module imports without monailabel; building the task then says how to install it."""
    for name in [m for m in sys.modules if m == "monailabel" or m.startswith("monailabel.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "monailabel", None)  # `import monailabel` now fails
    try:
        guarded = importlib.reload(ml)
        assert not guarded.has_monailabel
        with pytest.raises(RuntimeError, match="requirements-monailabel.txt"):
            guarded.RobustClassificationInferTask("bundles/robust_xray_classification")
        with pytest.raises(RuntimeError, match="requirements-monailabel.txt"):
            guarded.monailabel_infers({"xray": "bundles/robust_xray_classification"})
    finally:
        monkeypatch.undo()
        importlib.reload(ml)


@needs_monailabel
def test_task_is_a_monailabel_classification_task(task: Any, predictor: Any) -> None:
    from monailabel.interfaces.tasks.infer_v2 import InferType
    from monailabel.tasks.infer.basic_infer import BasicInferTask

    assert isinstance(task, BasicInferTask) and task.is_valid()
    info = task.info()
    assert info["type"] == InferType.CLASSIFICATION and info["labels"] == predictor.class_names
    assert info["dimension"] == 2 and info["config"]["robustness"] is False
    infers = ml.monailabel_infers({"xray": predictor})
    assert list(infers) == ["xray"] and isinstance(infers["xray"], BasicInferTask)


@needs_monailabel
def test_dicom_and_nifti(task: Any, predictor: Any, phantom_dicom: Path, tmp_path: Path) -> None:
    label_file, result = task({"image": str(phantom_dicom)})
    assert label_file is None
    _check_contract(result, predictor.class_names)
    assert result["robustness"] is None and result["input_shape"] == [1, 32, 32]
    guard = result["guard"]
    assert set(guard) == {"adversarial_suspected", "score", "threshold"}
    assert isinstance(guard["adversarial_suspected"], bool)
    # the same stored values as a 2D NIfTI give the same prediction
    raw = load_image(phantom_dicom)
    nifti = tmp_path / "same.nii.gz"
    nib.save(nib.Nifti1Image(raw[0].numpy().astype(np.float32), raw.affine.numpy()), str(nifti))
    _, from_nifti = task({"image": str(nifti)})
    _check_contract(from_nifti, predictor.class_names)
    for c in predictor.class_names:
        assert from_nifti["probabilities"][c] == pytest.approx(result["probabilities"][c], abs=1e-5)
    # a DICOM series folder (what MONAI Label gives for a DICOMweb image) of that one radiograph: same prediction
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(phantom_dicom, folder / phantom_dicom.name)
    _, from_folder = task({"image": str(folder)})
    assert from_folder["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
    # without a guard the verdict is null
    saved, predictor.guard = predictor.guard, None
    try:
        _, unguarded = task({"image": str(phantom_dicom)})
    finally:
        predictor.guard = saved
    assert unguarded["guard"] is None and unguarded["probabilities"] == pytest.approx(result["probabilities"])


@needs_monailabel
def test_robustness_flips_at_eps_not_at_half(task: Any, predictor: Any, phantom_dicom: Path) -> None:
    _, result = task({"image": str(phantom_dicom), "robustness": "true", **FAST})
    r = result["robustness"]
    assert r["flipped"] and 0 < r["eps_lower_raw"] < r["eps_raw"] <= r["max_eps_raw"]
    assert r["eps_raw"] - r["eps_lower_raw"] <= FAST["robustness_rel_tol"] * r["eps_raw"] + 1e-9
    assert r["raw_units"] == "stored values" and r["bounds_raw"] == list(predictor.bounds)
    assert r["adversarial_label"] != result["predicted_label"]
    assert set(r["guard_on_adversarial"]) == {"adversarial_suspected", "score", "threshold"}
    # the same deterministic PGD on the stored values flips the prediction at eps and not at eps / 2
    x = predictor.preprocess(load_image(phantom_dicom))[None]
    label = torch.tensor([result["predicted_index"]])
    for eps, flips in ((r["eps_raw"], True), (r["eps_raw"] / 2, False)):
        adv = PGD(predictor.model, eps, num_steps=FAST["robustness_steps"], random_start=False,
                  bounds=predictor.bounds)(x, label)
        assert (adv - x).abs().max() <= eps * (1 + 1e-6)
        with torch.no_grad():
            assert (int(predictor.model(adv).argmax()) != result["predicted_index"]) is flips, eps


@needs_monailabel
def test_real_cr_radiograph(task: Any, predictor: Any, shared_data: Path) -> None:
    """A real CR chest radiograph (JPEG 2000, 1955 x 1841, MONOCHROME1) through the bundle's own preprocessing."""
    _, result = task({"image": str(shared_data / "dicom" / "RG1_J2KI.dcm")})
    _check_contract(result, predictor.class_names)
    assert result["input_shape"] == [1, 1841, 1955] and result["guard"] is not None


@needs_monailabel
def test_bad_input(task: Any, phantom_dicom: Path, shared_data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.dcm"
    with pytest.raises(FileNotFoundError, match="nope.dcm"):
        task({"image": str(missing)})
    volume = shared_data / "nifti" / "anatomical.nii"  # a 3D volume for a 2D bundle
    with pytest.raises(ValueError, match=r"anatomical\.nii.*\(1, 33, 41, 25\).*2D bundle"):
        task({"image": str(volume)})
    rgb = shared_data / "dicom" / "US1_UNCR.dcm"  # RGB ultrasound into a one-channel network
    with pytest.raises(ValueError, match=r"US1_UNCR\.dcm.*\(3, "):
        task({"image": str(rgb)})
    with pytest.raises(ValueError, match="robustness must be true or false, got 'maybe'"):
        task({"image": str(phantom_dicom), "robustness": "maybe"})
    with pytest.raises(ValueError, match="predictor must be a BundlePredictor"):
        ml.RobustClassificationInferTask(object())
