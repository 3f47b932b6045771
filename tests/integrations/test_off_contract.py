# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Inputs outside the X-ray bundle's input contract (DICOM CR, CHEST, one channel, 12-bit stored values) through the
three entry points: ``monai-robust predict``, DICOM screening (``python -m monai_robust.dicom screen``) and the MONAI
Label infer task (in process), and the MONAI Deploy operator (modality, 8-bit and body part, in process). Each output
carries the refusal or the flag; a refused input never gets a class.

Cells of the (case x entry point) table tested here, the others where they already are:

================  ==========================  ===============================  ===============================
case              predict (CLI)               screen (CLI)                     MONAI Label task
================  ==========================  ===============================  ===============================
wrong modality    here: CT refused            here: CT flagged (rules '*');    here: CT refused
                                              default rules skip it:
                                              test_screener::test_cr_j2k_...
wrong channels    test_cli::test_off_contract test_screener::test_bad_files_   test_monailabel::test_bad_input
                  _through_predict (RGB PNG)  reported... (RGB US skipped)     (RGB US refused)
8-bit image       here: PNG flagged           here: 8-bit DICOM flagged        here: PNG flagged
constant image    test_cli::test_off_contract test_safety (slope 0: "constant  here: flagged
                  _through_predict            image", not screened)
body part         here: flagged               here: flagged                    here: flagged
================  ==========================  ===============================  ===============================
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

import monai_robust.integrations.monailabel as ml
from monai_robust.bundle.cli import main as robust_main
from monai_robust.dicom import main as dicom_main
from tests.integrations.orthanc import missing_prerequisite

# highdicom warns about source patient names of one component (the real CT file's): the sources are real files
pytestmark = pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name")


def _dicom_variant(source: Path, path: Path, **changes: Any) -> Path:
    """A copy of a phantom radiograph as a series of its own, with header changes; ``pixels=`` new 8-bit pixels."""
    ds = copy.deepcopy(pydicom.dcmread(source))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    pixels = changes.pop("pixels", None)
    if pixels is not None:  # 8-bit pixel data (BitsAllocated and BitsStored 8)
        ds.set_pixel_data(pixels.astype(np.uint8), "MONOCHROME2", 8)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def inputs(trained_xray_bundle: tuple[Path, Path, dict[str, Any]], shared_data: Path, tmp_path_factory: Any) -> dict:
    """Per case, the files each entry point gets: ``{"predict": path, "screen": path, "monailabel": path}``."""
    from monai_robust.data.datalist import load_datalist

    _, root, _ = trained_xray_bundle
    out = tmp_path_factory.mktemp("off_contract")
    phantom = Path(load_datalist(root / "data" / "dataset.json", "test")[0]["image"])
    stored = pydicom.dcmread(phantom).pixel_array
    # 8-bit images of 48 x 40 pixels: resampled to the model's 32 x 32 they no longer look 8-bit, so the contract must
    # be checked on the values as read
    grey = np.random.default_rng(0).integers(0, 256, (48, 40), dtype=np.uint8)
    png = out / "photo.png"  # an 8-bit grey photo
    Image.fromarray(grey).save(png)
    eight_bit = _dicom_variant(phantom, out / "eight_bit.dcm", pixels=grey)
    head = _dicom_variant(phantom, out / "head.dcm", BodyPartExamined="HEAD")
    constant = out / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.full(stored.shape, 1000.0, np.float32), np.eye(4)), str(constant))
    ct = shared_data / "dicom" / "693_UNCR.dcm"  # a real CT slice (512 x 512, HU)
    return {
        "modality": {"predict": ct, "screen": ct, "monailabel": ct},
        "low_bit_depth": {"predict": png, "screen": eight_bit, "monailabel": png},
        "constant_image": {"monailabel": constant},
        "body_part": {"predict": head, "screen": head, "monailabel": head},
    }


def _codes(record: dict[str, Any]) -> list[str]:
    return [f["code"] for f in record["contract"]]


@pytest.fixture(scope="module")
def predicted(trained_xray_bundle: tuple[Path, Path, dict[str, Any]], inputs: dict, tmp_path_factory: Any) -> dict:
    """``monai-robust predict`` once over every case's file: the printed JSON's record per file."""
    bundle_dir, _, overrides = trained_xray_bundle
    listing = tmp_path_factory.mktemp("predict") / "list.json"
    files = {case: str(v["predict"]) for case, v in inputs.items() if "predict" in v}
    listing.write_text(json.dumps([{"image": f} for f in files.values()]))
    flags = [f"--{k}={json.dumps(v)}" for k, v in overrides.items()]
    out = tmp_path_factory.mktemp("predict_out") / "predictions.json"
    rc = robust_main(["predict", "--bundle", str(bundle_dir), str(listing), *flags, "--device", "cpu", "--quiet",
                      "--output", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert any("not for clinical use" in s for s in result["statements"]) and result["contract"]["body_part"] == "CHEST"
    by_file = {r["image"]: r for r in result["predictions"]}
    return {case: by_file[f] for case, f in files.items()}


@pytest.mark.parametrize("case", ["modality", "low_bit_depth", "body_part"])
def test_predict(case: str, predicted: dict) -> None:
    rec = predicted[case]
    assert case in _codes(rec)
    if case == "modality":  # a CT slice into the CR model: refused, no class, no probabilities
        assert rec["refused"] and rec["predicted_class"] is None and rec["probabilities"] is None
        assert rec["guard"] is None and "'CT'" in rec["contract"][0]["message"]
    else:  # flagged beside the class
        assert not rec["refused"] and _codes(rec) == [case] and rec["predicted_class"] in rec["probabilities"]
        assert {f["severity"] for f in rec["contract"]} == {"flag"}


@pytest.fixture(scope="module")
def screened(trained_xray_bundle: tuple[Path, Path, dict[str, Any]], inputs: dict, tmp_path_factory: Any) -> dict:
    """``python -m monai_robust.dicom screen --modality '*'`` once over every case's DICOM file: per case, the
    written JSON record and the SR's TEXT items ``{meaning: [text, ...]}`` (``None`` without an SR)."""
    bundle_dir, root, overrides = trained_xray_bundle
    folder, out = tmp_path_factory.mktemp("screen_in"), tmp_path_factory.mktemp("screen_out")
    cases = {case: v["screen"] for case, v in inputs.items() if "screen" in v}
    for case, path in cases.items():
        (folder / f"{case}.dcm").write_bytes(Path(path).read_bytes())
    tiny = [f"{k}={v}" for k, v in overrides.items() if k != "bundle_root"]
    args = ["screen", "--bundle", str(bundle_dir), "--bundle-root", str(root), "--input", str(folder), "--output",
            str(out), "--modality", "*", "--device", "cpu", "--quiet", "--override", *tiny]  # fmt: skip
    assert dicom_main(args) == 0
    summary = json.loads((out / "screening_summary.json").read_text())
    found = {}
    for r in summary["results"]:
        (source,) = r["sources"]
        record = json.loads(Path(r["files"]["json"]).read_text())
        texts = None
        if "sr" in r["files"]:
            texts = {}
            for item in pydicom.dcmread(r["files"]["sr"]).ContentSequence:
                if item.ValueType == "TEXT":
                    texts.setdefault(str(item.ConceptNameCodeSequence[0].CodeMeaning), []).append(str(item.TextValue))
        found[Path(source).stem] = (record, texts)
    return found


@pytest.mark.parametrize("case", ["modality", "low_bit_depth", "body_part"])
def test_screen(case: str, screened: dict) -> None:
    record, texts = screened[case]
    (image,) = record["images"]
    assert record["status"] == "screened" and not image["refused"] and case in _codes(image)
    assert {f["severity"] for f in image["contract"]} == {"flag"}
    assert record["summary"]["contract_flags"][case] == 1
    # the SR says it next to the class, with the statements of the bundle's metadata
    (flag_text,) = texts["Input contract flag"]
    assert next(f["message"] for f in image["contract"] if f["code"] == case) in flag_text
    assert any("not for clinical use" in t for t in texts["Statement"])
    if case == "modality":  # screened only because the rules say '*'; the CT's HU also leave the stored range
        assert set(_codes(image)) == {"modality", "stored_range"} and "series rules select this modality" in flag_text
        assert record["model"]["input_contract"]["modality"] == ["CR"]
    else:
        assert _codes(image) == [case]


@pytest.fixture(scope="module")
def task(xray_predictor: Any) -> Any:
    if not ml.has_monailabel:
        missing_prerequisite("monailabel is not importable: `pip install --no-deps -r requirements-monailabel.txt`")
    return ml.RobustClassificationInferTask(xray_predictor)


@pytest.mark.parametrize("case", ["modality", "low_bit_depth", "constant_image", "body_part"])
def test_monailabel_task(case: str, task: Any, inputs: dict) -> None:
    path = inputs[case]["monailabel"]
    if case == "modality":  # refused: MONAI Label answers with the error, never with a class
        with pytest.raises(ValueError, match=r"693_UNCR\.dcm: refused by the bundle's input contract: modality 'CT'"):
            task({"image": str(path)})
        return
    _, result = task({"image": str(path)})
    json.dumps(result, default=str)  # what MONAI Label returns
    assert _codes(result) == [case] and result["refused"] is False
    assert result["predicted_label"] in task.predictor.class_names
    assert any("not for clinical use" in s for s in result["statements"])


@pytest.mark.parametrize("case", ["modality", "low_bit_depth", "body_part"])
def test_deploy_operator(case: str, xray_predictor: Any, inputs: dict) -> None:
    """The MONAI Deploy operator checks the contract on the stored values as read too (the 8-bit image is 48 x 40, so
    a check after the bundle's resampling would miss it), with the modality and body part of the series' header."""
    import monai_robust.integrations.deploy_app as deploy

    if not deploy.has_deploy:
        missing_prerequisite(f"{deploy.INSTALL_HINT} The MONAI Deploy tests need it.")
    ds = pydicom.dcmread(inputs[case]["screen"])
    voxels = ds.pixel_array[None]  # Deploy's volume: (slices, rows, columns) of stored values
    operator = SimpleNamespace(predictor=xray_predictor)  # classify() needs the predictor only, no Deploy fragment
    result = deploy.RobustClassifierOperator.classify(operator, voxels, [ds])
    (record,) = result.predictions
    assert case in _codes(record)
    assert record["refused"] is (case == "modality")
    assert (record["predicted_class"] is None) is (case == "modality")
