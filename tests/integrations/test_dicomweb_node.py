# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The DICOM node with DICOMweb, against a real Orthanc with its DICOMweb plugin: a series C-STOREd to the node by a
pynetdicom client gets its SR stored in Orthanc by STOW-RS (checked by QIDO-RS and Orthanc's REST API); a STOW-RS
destination that is down leaves the SR on disk; a study pulled by QIDO-RS/WADO-RS is screened; and the README's
``serve --destination-dicomweb URL --pull-dicomweb URL --study UID`` command does both."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from monai_robust.integrations.dicom import DicomNode, DicomScreener, SeriesRules
from monai_robust.integrations.dicom.cli import main as cli_main
from monai_robust.integrations.dicomweb import DicomWebClient
from monai_robust.integrations.dicomweb_node import StowDestination, pull_dicomweb
from tests.integrations.dicom.test_node import store
from tests.integrations.orthanc import OrthancServer, dicomweb_orthanc, free_port

LOGGER = "monai_robust.integrations.dicom.node"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with dicomweb_orthanc(tmp_path_factory.mktemp("orthanc_dicomweb_node")) as server:
        yield server


@pytest.fixture(scope="module")
def screener(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> DicomScreener:
    bundle_dir, _, overrides = trained_xray_bundle
    return DicomScreener(bundle_dir, SeriesRules(modalities=("CR", "DX")), device="cpu", overrides=overrides)


def _sr_in_pacs(pacs: OrthancServer, study_uid: str, sr_uid: str) -> pydicom.Dataset:
    """The SR as Orthanc stored it, found by QIDO-RS (its series) and read back through the REST API."""
    series = DicomWebClient(pacs.dicomweb_url).search_series([study_uid], {"Modality": "SR"})
    assert series, f"QIDO-RS finds no SR series in study {study_uid}"
    (hit,) = [i for i in pacs.instances_of_study(study_uid) if i["MainDicomTags"]["SOPInstanceUID"] == sr_uid]
    return pydicom.dcmread(io.BytesIO(pacs.get(f"/instances/{hit['ID']}/file")))


def test_node_stows_sr_and_keeps_it_when_down(
    pacs: OrthancServer, screener: DicomScreener, cr_in_window: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = pydicom.dcmread(cr_in_window)
    with DicomNode(
        screener, ae_title="NODE", port=0, destination=StowDestination(pacs.dicomweb_url),
        undelivered_dir=tmp_path / "undelivered",
    ) as node:  # fmt: skip
        assert store(node.port, [ds]) == [0x0000]
        (rec,) = node.wait_for_records(1, timeout=120)
    assert rec.status == "screened", rec.reason
    assert rec.delivery is not None and rec.delivery.ok, rec.delivery
    assert rec.files == {}  # delivered, and no output folder: nothing kept
    back = _sr_in_pacs(pacs, str(ds.StudyInstanceUID), str(rec.sr_uid))
    assert back.Modality == "SR" and back.SOPInstanceUID == rec.result.sr.SOPInstanceUID
    assert f"sent to STOW-RS {pacs.dicomweb_url}: STOW-RS stored {rec.sr_uid}" in caplog.text

    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    with DicomNode(
        screener, ae_title="NODE", port=0, destination=StowDestination(down), undelivered_dir=tmp_path / "undelivered"
    ) as node:
        assert store(node.port, [ds]) == [0x0000]
        (rec,) = node.wait_for_records(1, timeout=120)
    assert rec.delivery is not None and not rec.delivery.ok and "refused" in rec.delivery.message
    kept = pydicom.dcmread(rec.files["sr"])  # the SR stays on disk, in the undelivered folder
    assert Path(rec.files["sr"]).parent == tmp_path / "undelivered" and kept.SOPInstanceUID == rec.sr_uid
    assert f"NOT delivered to STOW-RS {down}" in caplog.text
    assert not list((tmp_path / "undelivered" / ".spool").rglob("*.dcm"))  # kept on disk: the spool may be cleared


def test_pull_dicomweb(pacs: OrthancServer, screener: DicomScreener, cr_in_window: Path, tmp_path: Path) -> None:
    stored = pacs.upload(cr_in_window)
    study = str(pydicom.dcmread(cr_in_window, stop_before_pixels=True).StudyInstanceUID)
    with DicomNode(screener, ae_title="PULLER", port=0, allowed_ae_titles=["PULLER"], output_dir=tmp_path) as node:
        assert pull_dicomweb(node, pacs.dicomweb_url, [study], {"Modality": "MR"}) == {}
        got = pull_dicomweb(node, pacs.dicomweb_url, [study], [{"Modality": "CR"}, {"Modality": "DX"}])
        (rec,) = node.wait_for_records(1, timeout=120)
    assert list(got) == [study] and got[study].ok, got
    assert rec.status == "screened" and rec.calling_ae == "PULLER" and not rec.partial
    assert rec.series_uid == pacs.get(f"/series/{stored['ParentSeries']}")["MainDicomTags"]["SeriesInstanceUID"]
    with DicomNode(screener, ae_title="PULLER", port=0, allowed_ae_titles=["OTHER"], output_dir=tmp_path) as node:
        refused = pull_dicomweb(node, pacs.dicomweb_url, [study], {"Modality": "CR"})  # PULLER may not call it
    assert not refused[study].ok and "no association with the node PULLER" in refused[study].message
    with pytest.raises(RuntimeError, match="PULLER is not running"):
        pull_dicomweb(DicomNode(screener, ae_title="PULLER", output_dir=tmp_path), pacs.dicomweb_url)


def test_serve_command_pulls_and_stows(
    pacs: OrthancServer, trained_xray_bundle: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's command: ``serve --destination-dicomweb URL --pull-dicomweb URL --study UID`` pulls the study's
    CR/DX series into the node, screens them and stores each SR in the PACS by STOW-RS."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    bundle_dir, root, overrides = trained_xray_bundle
    phantom = sorted((root / "data" / "images").glob("*.dcm"))[0]
    pacs.upload(phantom)
    study = str(pydicom.dcmread(phantom, stop_before_pixels=True).StudyInstanceUID)
    client = DicomWebClient(pacs.dicomweb_url)
    n_series = len({s.series_uid for m in ("CR", "DX") for s in client.search_series([study], {"Modality": m})})
    tiny = [f"{k}={json.dumps(v)}" for k, v in overrides.items() if k != "bundle_root"]
    out = tmp_path / "out"
    args = ["serve", "--bundle", str(bundle_dir), "--bundle-root", str(root), "--ae-title", "WEB_NODE", "--port", "0",
            "--destination-dicomweb", pacs.dicomweb_url, "--pull-dicomweb", pacs.dicomweb_url, "--study", study,
            "--modality", "CR", "DX", "--output", str(out), "--override", *tiny]  # fmt: skip
    stop, codes = threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(cli_main(args, stop_event=stop)), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("*.json"))) < n_series or caplog.text.count("STOW-RS stored") < n_series:
            assert thread.is_alive() and time.monotonic() < deadline, f"{codes} {caplog.text[-3000:]}"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0] and n_series >= 1
    for sr_path in out.glob("*.SR.dcm"):
        sr = pydicom.dcmread(sr_path)
        assert _sr_in_pacs(pacs, study, str(sr.SOPInstanceUID)).SOPInstanceUID == sr.SOPInstanceUID
    # a PACS that is down when the pull starts: the error is logged and the node stops with exit code 1
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert cli_main([*args[:-len(tiny) - 1], "--pull-dicomweb", down, "--override", *tiny], stop_event=stop) == 1
    assert "the start-up action (on_start, e.g. a DICOMweb pull) failed" in caplog.text and "DICOM node WEB_NODE stopped" in caplog.text
    bad = ["serve", "--bundle", str(bundle_dir), "--port", "0"]
    assert cli_main([*bad, "--study", study]) == 2  # --study needs --pull-dicomweb
    assert cli_main([*bad, "--destination", "A@127.0.0.1:1", "--destination-dicomweb", pacs.dicomweb_url]) == 2
    assert cli_main([*bad, "--destination-dicomweb", "pacs:8042"]) == 2
