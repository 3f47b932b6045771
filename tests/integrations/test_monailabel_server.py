# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The real MONAI Label server (``monailabel start_server`` with ``apps/monailabel``, started once for the module on
loopback) serving the tiny trained X-ray bundle named by ``--conf bundles``, tested over HTTP: ``/info/``, inference on
an uploaded DICOM and PNG (the same numbers as the bundle's predictor in this process), the robustness search, a bad
request, and inference on a series of Orthanc's DICOMweb datastore (``--studies http://.../dicom-web``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from monai_robust.data.datalist import load_datalist, load_image
from tests.integrations.monailabel_server import MonaiLabelServer, require_monailabel_server
from tests.integrations.orthanc import OrthancServer, require_dicomweb_plugin

FAST = {"robustness_steps": 5, "robustness_rel_tol": 0.1}


def _conf(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> dict[str, str]:
    """``--conf bundles`` naming the trained bundle (configs from the repo, weights and data in ``bundle_root``)."""
    bundle_dir, _, overrides = trained_xray_bundle
    return {"bundles": json.dumps({"xray": {"bundle": str(bundle_dir), **overrides}}, separators=(",", ":"))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Iterator[MonaiLabelServer]:
    require_monailabel_server()
    with MonaiLabelServer(tmp_path_factory.mktemp("monailabel"), _conf(trained_xray_bundle)) as s:
        yield s


@pytest.fixture(scope="module")
def predictor(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Any:
    from monai_robust.bundle_helpers import BundlePredictor

    bundle_dir, _, overrides = trained_xray_bundle
    return BundlePredictor(bundle_dir, device="cpu", **overrides)


@pytest.fixture(scope="module")
def phantom(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Path:
    _, root, _ = trained_xray_bundle
    return Path(load_datalist(root / "data" / "dataset.json", "test")[0]["image"])


def _expected(predictor: Any, path: Path) -> dict[str, float]:
    return predictor.predict(predictor.preprocess(load_image(path))[None])[0]["probabilities"]


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text[:1000]
    return response.json()


def test_info(server: MonaiLabelServer, predictor: Any) -> None:
    info = _ok(requests.get(server.url + "/info/", timeout=10))
    assert info["name"] == "monai_robust" and list(info["models"]) == ["xray"]
    model = info["models"]["xray"]
    assert model["type"] == "classification" and model["labels"] == predictor.class_names
    assert model["dimension"] == 2 and model["config"]["robustness"] is False
    assert info["labels"] == predictor.class_names and info["trainers"] == {}


def test_infer_uploaded_dicom_and_png(server: MonaiLabelServer, predictor: Any, phantom: Path, tmp_path: Path) -> None:
    result = _ok(server.infer("xray", file=phantom))
    assert result["probabilities"] == pytest.approx(_expected(predictor, phantom), abs=1e-5)
    assert result["predicted_label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert set(result["guard"]) == {"adversarial_suspected", "score", "threshold"} and result["robustness"] is None
    # a PNG of 40 rows x 56 columns: read as (columns, rows) like the DICOM reader, same numbers as in-process
    png = tmp_path / "radiograph.png"
    pixels = (np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(png)
    from_png = _ok(server.infer("xray", file=png))
    assert from_png["input_shape"] == [1, 56, 40]
    assert from_png["probabilities"] == pytest.approx(_expected(predictor, png), abs=1e-5)


def test_infer_robustness(server: MonaiLabelServer, predictor: Any, phantom: Path) -> None:
    result = _ok(server.infer("xray", file=phantom, params={"robustness": True, **FAST}))
    r = result["robustness"]
    assert r["flipped"] and 0 < r["eps_lower_model"] < r["eps_model"] <= r["max_eps_model"]
    assert r["eps_model"] - r["eps_lower_model"] <= FAST["robustness_rel_tol"] * r["eps_model"] + 1e-12
    assert r["eps_raw"] == pytest.approx(predictor.intensity_map.eps_to_physical(r["eps_model"]))
    assert r["adversarial_label"] != result["predicted_label"] and r["num_probes"] >= 2


def _logged(server: MonaiLabelServer, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in server.log_tail(100_000):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_bad_requests(server: MonaiLabelServer, phantom: Path) -> None:
    assert server.infer("no_such_model", file=phantom).status_code >= 400
    assert _logged(server, "There is no model 'no_such_model' available")
    assert server.infer("xray", file=phantom, params={"robustness": "maybe"}).status_code >= 400
    assert _logged(server, "request flag robustness must be true or false, got 'maybe'")


def test_infer_on_dicomweb_study(
    tmp_path_factory: pytest.TempPathFactory, trained_xray_bundle: tuple[Path, Path, dict[str, Any]], predictor: Any,
    phantom: Path,
) -> None:
    """``--studies`` Orthanc's DICOMweb root: the series is fetched by MONAI Label's datastore by its series UID."""
    require_monailabel_server()
    plugin = require_dicomweb_plugin()
    work = tmp_path_factory.mktemp("monailabel_dicomweb")
    with OrthancServer(work / "orthanc", dicomweb_plugin=plugin) as pacs:
        pacs.upload(phantom)
        series_uid = str(pydicom.dcmread(phantom, stop_before_pixels=True).SeriesInstanceUID)
        with MonaiLabelServer(work / "ml", _conf(trained_xray_bundle), studies=pacs.dicomweb_url) as server:
            info = _ok(requests.get(server.url + "/info/", timeout=10))
            assert info["datastore"]["total"] == 1  # every modality listed (MONAI Label's default filter is CT only)
            result = _ok(server.infer("xray", image=series_uid))
    assert result["probabilities"] == pytest.approx(_expected(predictor, phantom), abs=1e-5)
    assert result["input_shape"] == list(load_image(phantom).shape)
