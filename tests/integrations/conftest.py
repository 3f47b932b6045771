# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Fixtures shared by the clinical-integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def trained_xray_bundle(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> tuple[Path, Path, dict[str, Any]]:
    """The tiny trained X-ray bundle of ``tests/conftest.py`` (trained once per session, network + detector guard),
    with ``bundle_root`` included in the overrides so that integrations are built in one call.

    Returns:
        ``(bundle_dir, bundle_root, overrides)``: configs are read from ``bundle_dir``; ``bundle_root`` holds
        ``models/model.pt``, ``models/guard.pt`` and ``data/`` (the phantom DICOMs and ``dataset.json``);
        ``overrides`` (``bundle_root`` included) go to ``BundlePredictor(bundle_dir, **overrides)`` or
        ``DicomScreener(bundle_dir, overrides=overrides)``.
    """
    bundle_dir, root, overrides = trained_xray_bundle
    return bundle_dir, root, {**overrides, "bundle_root": str(root)}


@pytest.fixture(scope="session")
def cr_in_window(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RG1_J2KI.dcm`` (a real JPEG 2000 MONOCHROME1 CR, same UIDs) with RescaleSlope 0.125 added, so that its values
    (782 to 3995) lie inside the tiny X-ray bundle's [0, 4095] window: the original's 6255 to 31964 lie wholly
    outside it and are refused by the sanity gates ("not screened: off-window")."""
    import pydicom

    ds = pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm")
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.125, 0, "US"
    path = tmp_path_factory.mktemp("cr_in_window") / "RG1_J2KI_windowed.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def xray_predictor(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Any:
    """The tiny trained X-ray bundle as a ``BundlePredictor`` on CPU (network and guard), for expected numbers."""
    from monai_robust.bundle.predictor import BundlePredictor

    bundle_dir, _, overrides = trained_xray_bundle
    return BundlePredictor(bundle_dir, device="cpu", **overrides)


@pytest.fixture(scope="session")
def xray_phantom(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Path:
    """The first test-split phantom radiograph (DICOM CR) of the tiny trained X-ray bundle."""
    from monai_robust.data.datalist import load_datalist

    _, root, _ = trained_xray_bundle
    return Path(load_datalist(root / "data" / "dataset.json", "test")[0]["image"])
