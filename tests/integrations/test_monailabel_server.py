# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The real MONAI Label server (``monailabel start_server`` with ``apps/monailabel``, started once for the module on
loopback) serving the tiny trained X-ray bundle named by ``--conf bundles``, tested over HTTP: ``/info/``, inference on
an uploaded DICOM and PNG (the same numbers as the bundle's predictor in this process), the robustness search, a bad
request (the DICOMweb datastore: ``test_monailabel_dicomweb.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.integrations.monailabel_server import (
    MonaiLabelServer,
    conf_for,
    expected_probabilities,
    ok_json,
    require_monailabel_server,
)

FAST = {"robustness_steps": 5, "robustness_rel_tol": 0.1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> Iterator[MonaiLabelServer]:
    require_monailabel_server()
    with MonaiLabelServer(tmp_path_factory.mktemp("monailabel"), conf_for(trained_xray_bundle)) as s:
        yield s


def test_info(server: MonaiLabelServer, xray_predictor: Any) -> None:
    info = ok_json(requests.get(server.url + "/info/", timeout=10))
    assert info["name"] == "monai_robust" and list(info["models"]) == ["xray"]
    model = info["models"]["xray"]
    assert model["type"] == "classification" and model["labels"] == xray_predictor.class_names
    assert model["dimension"] == 2 and model["config"]["robustness"] is False
    assert info["labels"] == xray_predictor.class_names and info["trainers"] == {}


def test_infer_uploaded_dicom_and_png(server: MonaiLabelServer, xray_predictor: Any, xray_phantom: Path, tmp_path: Path) -> None:
    result = ok_json(server.infer("xray", file=xray_phantom))
    assert result["probabilities"] == pytest.approx(expected_probabilities(xray_predictor, xray_phantom), abs=1e-5)
    assert result["predicted_label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert set(result["guard"]) == {"adversarial_suspected", "score", "threshold"} and result["robustness"] is None
    # a PNG of 40 rows x 56 columns: read as (columns, rows) like the DICOM reader, same numbers as in-process
    png = tmp_path / "radiograph.png"
    pixels = (np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(png)
    from_png = ok_json(server.infer("xray", file=png))
    assert from_png["input_shape"] == [1, 56, 40]
    assert from_png["probabilities"] == pytest.approx(expected_probabilities(xray_predictor, png), abs=1e-5)


def test_infer_robustness(server: MonaiLabelServer, xray_predictor: Any, xray_phantom: Path) -> None:
    result = ok_json(server.infer("xray", file=xray_phantom, params={"robustness": True, **FAST}))
    r = result["robustness"]
    assert r["flipped"] and 0 < r["eps_lower_raw"] < r["eps_raw"] <= r["max_eps_raw"]
    assert r["eps_raw"] - r["eps_lower_raw"] <= FAST["robustness_rel_tol"] * r["eps_raw"] + 1e-9
    assert r["raw_units"] == "stored values" and r["bounds_raw"] == list(xray_predictor.bounds)
    assert r["adversarial_label"] != result["predicted_label"] and r["num_probes"] >= 2


def _logged(server: MonaiLabelServer, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in server.log_tail(100_000):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_bad_requests(server: MonaiLabelServer, xray_phantom: Path) -> None:
    assert server.infer("no_such_model", file=xray_phantom).status_code >= 400
    assert _logged(server, "There is no model 'no_such_model' available")
    assert server.infer("xray", file=xray_phantom, params={"robustness": "maybe"}).status_code >= 400
    assert _logged(server, "request flag robustness must be true or false, got 'maybe'")
