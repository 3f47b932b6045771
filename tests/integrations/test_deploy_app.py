# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The MONAI Deploy application of the screening chain: Deploy's volume layout against this project's reader (a
radiograph and a CT series), and the README's command run once on phantom radiographs: the TID 1500 SR and JSON it
writes hold the same predictions as ``screen`` on the same files. Without ``monai-deploy-app-sdk`` only the layout
function and the import guard are tested (on CI the Deploy tests must run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

import monai_robust.integrations.deploy_app as deploy
from monai_robust.data.datalist import load_image
from monai_robust.integrations.dicom import DicomScreener, SeriesRules
from tests.integrations.orthanc import missing_prerequisite


def _require_deploy() -> None:
    if not deploy.has_deploy:
        missing_prerequisite(f"{deploy.INSTALL_HINT} The MONAI Deploy tests need it.")


def test_layout_and_guards() -> None:
    rows = np.arange(3 * 4).reshape(3, 4)
    vol = rows[None]  # (slices=1, rows=3, columns=4)
    (img,) = deploy.deploy_to_reader_layout(vol, 2)
    assert img.shape == (1, 4, 3) and img[0, 2, 1] == vol[0, 1, 2]  # (column, row) indexing
    stack = np.stack([rows, rows + 100])
    two = deploy.deploy_to_reader_layout(stack, 2)
    assert [i.shape for i in two] == [(1, 4, 3)] * 2 and two[1][0, 0, 0] == 100
    (volume,) = deploy.deploy_to_reader_layout(stack, 3)
    assert volume.shape == (1, 4, 3, 2) and volume[0, 3, 2, 1] == stack[1, 2, 3]
    with pytest.raises(ValueError, match=r"\(slices, rows, columns\), got shape \(3, 4\)"):
        deploy.deploy_to_reader_layout(rows, 2)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        deploy.deploy_to_reader_layout(stack, 4)
    # MONOCHROME1 values: inverted over the BitsStored range before the rescale; MONOCHROME2 unchanged
    mono1 = pydicom.Dataset()
    mono1.PhotometricInterpretation, mono1.BitsStored, mono1.PixelRepresentation = "MONOCHROME1", 12, 0
    mono1.RescaleSlope, mono1.RescaleIntercept = 2.0, -10.0
    mono2 = pydicom.Dataset()
    mono2.PhotometricInterpretation = "MONOCHROME2"
    values = deploy.deploy_to_reader_values(np.stack([rows * 2.0 - 10, rows * 1.0]), [mono1, mono2])
    np.testing.assert_allclose(values[0], 2.0 * (4095 - rows) - 10)
    np.testing.assert_allclose(values[1], rows)
    with pytest.raises(ValueError, match=r"one dataset per slice .* got 1 dataset\(s\) for shape \(2, 3, 4\)"):
        deploy.deploy_to_reader_values(stack, [mono2])
    mono1.ModalityLUTSequence = [pydicom.Dataset()]
    with pytest.raises(ValueError, match="MONOCHROME1 with a Modality LUT Sequence"):
        deploy.deploy_to_reader_values(stack[:1], [mono1])
    rules = json.loads(deploy.selection_rules(["CR", "DX"]))["selections"][0]["conditions"]
    assert rules == {"Modality": "(?i)^(CR|DX)$"} and json.loads(deploy.selection_rules(None))["selections"][0]["conditions"] == {}
    if not deploy.has_deploy:
        with pytest.raises(RuntimeError, match="monai-deploy-app-sdk==4.0.0"):
            deploy.RobustScreeningDeployApp(".", ".", object())


def _deploy_volume(folder: Path, modality: str) -> np.ndarray:
    """Deploy's loader, selector and volume operators called directly on a folder (one series)."""
    from monai.deploy.core import Fragment
    from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator, DICOMSeriesToVolumeOperator

    fragment = Fragment()
    studies = DICOMDataLoaderOperator(fragment, input_folder=folder, name="loader").load_data_to_studies(folder)
    rules = json.loads(deploy.selection_rules([modality]))
    selector = DICOMSeriesSelectorOperator(fragment, name="selector")
    selected = selector.filter(rules, studies)
    return DICOMSeriesToVolumeOperator(fragment, name="to_volume").convert_to_image(selected).asnumpy()


def test_deploy_volume_matches_reader(shared_data: Path, trained_xray_bundle: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _require_deploy()
    _, root, _ = trained_xray_bundle
    phantom = sorted((root / "data" / "images").glob("*.dcm"))[0]
    single = tmp_path / "cr"
    single.mkdir()
    shutil.copy(phantom, single)
    voxels = _deploy_volume(single, "CR")
    ds = pydicom.dcmread(phantom)
    assert voxels.shape == (1, ds.Rows, ds.Columns)  # Deploy: (slices, rows, columns)
    ours = load_image(phantom).numpy()
    (converted,) = deploy.deploy_to_reader_layout(voxels, 2)
    assert ours.shape == (1, ds.Columns, ds.Rows) and converted.shape == ours.shape
    np.testing.assert_allclose(converted, ours)
    assert not np.allclose(voxels, ours.reshape(voxels.shape)) or ds.Rows == ds.Columns  # unconverted: wrong pixels
    # a CT series (HU after rescale): Deploy's (slices, rows, columns) -> our (1, columns, rows, slices)
    ct = shared_data / "dicom" / "ct_series"
    (volume,) = deploy.deploy_to_reader_layout(_deploy_volume(ct, "CT"), 3)
    reader = load_image(ct).numpy()
    assert volume.shape == reader.shape
    np.testing.assert_allclose(volume, reader)
    # a real MONOCHROME1 CR (JPEG 2000, 15 bits): Deploy keeps the stored values, the reader inverts them
    mono1 = tmp_path / "mono1"
    mono1.mkdir()
    shutil.copy(shared_data / "dicom" / "RG1_J2KI.dcm", mono1)
    raw = _deploy_volume(mono1, "CR")
    header = pydicom.dcmread(mono1 / "RG1_J2KI.dcm", stop_before_pixels=True)
    (converted,) = deploy.deploy_to_reader_layout(deploy.deploy_to_reader_values(raw, [header]), 2)
    np.testing.assert_allclose(converted, load_image(mono1 / "RG1_J2KI.dcm").numpy())
    np.testing.assert_allclose(raw[0].T, (2**15 - 1) - converted[0])  # unconverted: inverted contrast


def test_readme_command_writes_the_screening_sr(trained_xray_bundle: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    """``python -m monai_robust.integrations.deploy_app --bundle ... -i ... -o ...`` (the README's command)."""
    _require_deploy()
    bundle_dir, root, overrides = trained_xray_bundle
    phantom = sorted((root / "data" / "images").glob("*.dcm"))[1]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(phantom, incoming)
    code = deploy.main(["--bundle", str(bundle_dir), "-i", str(incoming), "-o", str(tmp_path / "results"),
                        "--modality", "CR", "DX", "--overrides", json.dumps({**overrides, "bundle_root": str(root)})])
    assert code == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    (sr_path,) = (tmp_path / "results").glob("*.SR.dcm")
    sr = pydicom.dcmread(sr_path)
    src = pydicom.dcmread(phantom, stop_before_pixels=True)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == src.StudyInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # the same predictions as `screen` on the same file
    screener = DicomScreener(bundle_dir, SeriesRules(modalities=("CR", "DX")), device="cpu", overrides=overrides)
    (expected,) = screener.screen_files([phantom])
    (got,) = record["images"]
    assert got["sop_instance_uid"] == str(src.SOPInstanceUID)
    assert got["probabilities"] == pytest.approx(expected.predictions[0]["probabilities"], abs=1e-5)
    assert got["guard"]["adversarial_suspected"] == expected.predictions[0]["guard"]["adversarial_suspected"]
