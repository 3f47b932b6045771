# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The MONAI Label app's configuration (``--conf bundles``) without a server, and the app folder's files: the dcmqi
placeholder MONAI Label looks for and the ``pydicom_seg`` shim."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from monai_robust.integrations.monailabel_app import PROJECT_BUNDLES, default_bundles, parse_bundles_conf
from tests.integrations.monailabel_server import APP_DIR

XRAY = str(PROJECT_BUNDLES / "robust_xray_classification")
CT = str(PROJECT_BUNDLES / "robust_ct_classification")


def test_bundles_conf_forms(tmp_path: Path) -> None:
    assert parse_bundles_conf(json.dumps({"xray": XRAY})) == {"xray": {"bundle": XRAY}}
    spec = {"xray": {"bundle": XRAY, "bundle_root": "/runs/x", "image_size": 32}}
    assert parse_bundles_conf(json.dumps(spec)) == spec
    assert parse_bundles_conf(f"{XRAY}, {CT}") == {
        "robust_xray_classification": {"bundle": XRAY},
        "robust_ct_classification": {"bundle": CT},
    }
    # default: the trained bundles of a folder (models/model.pt present), named by folder
    trained = tmp_path / "mine"
    (trained / "configs").mkdir(parents=True)
    (trained / "models").mkdir()
    (trained / "models" / "model.pt").write_bytes(b"")
    (tmp_path / "untrained" / "configs").mkdir(parents=True)
    assert default_bundles(tmp_path) == {"mine": {"bundle": str(trained)}}
    assert default_bundles(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    "value, match",
    [
        ('{"xray": ', r"--conf bundles is not valid JSON \(Expecting value.*\): '\{\"xray\":'"),
        ('{"xray": {"image_size": 32}}', r"entry 'xray' needs a bundle folder"),
        ('{"x": "/no/such/bundle"}', r"entry 'x': '/no/such/bundle' is not a bundle \(no configs/\)"),
        (" , ", r"--conf bundles names no bundle"),
    ],
)
def test_bad_bundles_conf(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_bundles_conf(value)


def test_app_folder_files() -> None:
    placeholder = APP_DIR / "bin" / "itkimage2segimage"
    assert os.access(placeholder, os.X_OK)  # MONAI Label skips the dcmqi download when it exists
    run = subprocess.run([str(placeholder)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "placeholder" in run.stderr
    assert "RobustClassificationApp" in (APP_DIR / "main.py").read_text()
    shim = (APP_DIR / "pydicom_seg_shim" / "pydicom_seg.py").read_text()
    assert "from pydicom_seg_rb import *" in shim
