# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The real MONAI Label server with Orthanc's DICOMweb root as its datastore (``--studies http://.../dicom-web``):
both started once for the module on loopback; the study is listed (every modality, not MONAI Label's CT-only default)
and inferred by its series UID, fetched by MONAI Label's datastore and read as a DICOM series folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from monai_robust.data.datalist import load_image
from tests.integrations.monailabel_server import (
    MonaiLabelServer,
    conf_for,
    expected_probabilities,
    ok_json,
    require_monailabel_server,
)
from tests.integrations.orthanc import OrthancServer, require_dicomweb_plugin


@pytest.fixture(scope="module")
def pacs_and_server(
    tmp_path_factory: pytest.TempPathFactory, trained_xray_bundle: tuple[Path, Path, dict[str, Any]], xray_phantom: Path
) -> Iterator[tuple[OrthancServer, MonaiLabelServer]]:
    require_monailabel_server()
    plugin = require_dicomweb_plugin()
    work = tmp_path_factory.mktemp("monailabel_dicomweb")
    with OrthancServer(work / "orthanc", dicomweb_plugin=plugin) as pacs:
        pacs.upload(xray_phantom)
        with MonaiLabelServer(work / "ml", conf_for(trained_xray_bundle), studies=pacs.dicomweb_url) as server:
            yield pacs, server


def test_infer_on_dicomweb_study(pacs_and_server: tuple[OrthancServer, MonaiLabelServer], xray_predictor: Any, xray_phantom: Path) -> None:
    _, server = pacs_and_server
    info = ok_json(requests.get(server.url + "/info/", timeout=10))
    assert info["datastore"]["total"] == 1  # every modality listed (MONAI Label's default filter is CT only)
    series_uid = str(pydicom.dcmread(xray_phantom, stop_before_pixels=True).SeriesInstanceUID)
    result = ok_json(server.infer("xray", image=series_uid))
    assert result["probabilities"] == pytest.approx(expected_probabilities(xray_predictor, xray_phantom), abs=1e-5)
    assert result["input_shape"] == list(load_image(xray_phantom).shape)
