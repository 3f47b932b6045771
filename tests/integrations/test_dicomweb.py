# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOMweb in and out against a real Orthanc with its DICOMweb plugin (started once for the module): QIDO-RS search,
WADO-RS retrieve (in memory and into a folder, pixel-identical to the uploaded files), screening of the retrieved
series with the SR stored back by STOW-RS, and the errors of a down server and bad arguments."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from monai_robust.integrations.dicom import DicomScreener, SeriesRules
from monai_robust.integrations.dicom.cli import main as cli_main
from monai_robust.integrations.dicomweb import DicomWebClient, SeriesRef, StowError, screen_dicomweb
from tests.integrations.orthanc import OrthancServer, dicomweb_orthanc, free_port


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with dicomweb_orthanc(tmp_path_factory.mktemp("orthanc_dicomweb")) as server:
        yield server


@pytest.fixture(scope="module")
def uploaded(
    pacs: OrthancServer, shared_data: Path, trained_xray_bundle: tuple[Path, Path, dict[str, Any]], cr_in_window: Path
) -> list[Path]:
    """Two phantom radiographs, the real CR radiograph (JPEG 2000, rescaled into the model's window) and an MR image,
    stored in Orthanc."""
    _, root, _ = trained_xray_bundle
    files = sorted((root / "data" / "images").glob("*.dcm"))[:2]
    files += [cr_in_window, shared_data / "dicom" / "MR2_UNCR.dcm"]
    for f in files:
        pacs.upload(f)
    return files


@pytest.fixture(scope="module")
def screener(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> DicomScreener:
    bundle_dir, _, overrides = trained_xray_bundle
    return DicomScreener(bundle_dir, SeriesRules(modalities=("CR", "DX")), device="cpu", overrides=overrides)


def _by_sop(files: list[Path]) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}


def _items(ds: pydicom.Dataset) -> list[tuple[str, Any]]:
    """The SR's content items, flattened: (concept name, numeric value or text or code meaning)."""
    out = []
    for item in getattr(ds, "ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        if "MeasuredValueSequence" in item:
            out.append((name, round(float(item.MeasuredValueSequence[0].NumericValue), 5)))
        elif "TextValue" in item:
            out.append((name, str(item.TextValue)))
        elif "ConceptCodeSequence" in item:
            out.append((name, str(item.ConceptCodeSequence[0].CodeMeaning)))
        out.extend(_items(item))
    return out


def test_qido_search_and_wado_retrieve(pacs: OrthancServer, uploaded: list[Path], tmp_path: Path) -> None:
    client = DicomWebClient(pacs.dicomweb_url)
    originals = _by_sop(uploaded)
    series = client.search_series()
    assert {(s.study_uid, s.series_uid) for s in series} == {
        (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in originals.values()
    }
    cr = client.search_series(filters={"Modality": "CR"})
    assert cr and all(s.modality == "CR" for s in cr) and len(cr) == len(series) - 1  # the MR series is left out
    mr = next(s for s in series if s.modality == "MR")
    assert client.search_series(study_uids=[mr.study_uid]) == [mr] and mr.num_instances == 1
    # WADO-RS in memory: the same pixels as uploaded
    (got,) = client.retrieve_series(mr)
    np.testing.assert_array_equal(got.pixel_array, originals[str(got.SOPInstanceUID)].pixel_array)
    # into a folder: <study>/<series>/<sop>.dcm, pixel-identical (the JPEG 2000 CR included)
    folders = client.retrieve_to_folder(tmp_path / "wado")
    assert len(folders) == len(series)
    written = sorted(p for f in folders for p in f.glob("*.dcm"))
    assert {p.stem for p in written} == set(originals)
    for p in written:
        ds = pydicom.dcmread(p)
        assert p.parent == tmp_path / "wado" / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
        np.testing.assert_array_equal(ds.pixel_array, originals[p.stem].pixel_array)
    with pytest.raises(FileExistsError, match=r"exists: retrieve into an empty folder"):
        client.retrieve_to_folder(tmp_path / "wado", study_uids=[mr.study_uid])


def test_screen_and_stow_sr(pacs: OrthancServer, uploaded: list[Path], screener: DicomScreener) -> None:
    client = DicomWebClient(pacs.dicomweb_url)
    cr_files = [f for f in uploaded if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CR"]
    expected = {r.series_uid: r for r in screener.screen_files(cr_files)}
    results = screen_dicomweb(screener, client, filters={"Modality": "CR"}, stow=client)
    assert {r.series_uid for r, _ in results} == set(expected)
    for result, delivery in results:
        assert result.status == "screened", result.reason
        assert delivery == [str(result.sr.SOPInstanceUID)]  # Orthanc accepted the SR
        # the same predictions as screening the files directly
        want = expected[result.series_uid].predictions
        assert len(result.predictions) == len(want)
        for got, exp in zip(result.predictions, want):
            assert got["probabilities"] == pytest.approx(exp["probabilities"], abs=1e-6)
        # the SR is now in the PACS, in the screened study, and reads back as the SR sent
        stored = [i for i in pacs.instances_of_study(result.study_uid) if i["MainDicomTags"]["SOPInstanceUID"]
                  == str(result.sr.SOPInstanceUID)]
        assert len(stored) == 1
        back = pydicom.dcmread(io.BytesIO(pacs.get(f"/instances/{stored[0]['ID']}/file")))
        assert back.Modality == "SR" and _items(back) == _items(result.sr)
    # QIDO-RS now also finds the SR series, which the screener skips as a non-image object
    assert any(s.modality == "SR" for s in client.search_series())


def test_down_server_and_bad_arguments(uploaded: list[Path]) -> None:
    down = DicomWebClient(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5, attempts=1)
    ds = pydicom.dcmread(uploaded[0])
    with pytest.raises(StowError, match=r"STOW-RS to http://127\.0\.0\.1:\d+/dicom-web failed for 1 instance.*refused"):
        down.store([ds])
    assert down.store([]) == []
    with pytest.raises(ValueError, match=r"url must be a DICOMweb root .* got 'pacs:8042'"):
        DicomWebClient("pacs:8042")
    with pytest.raises(ValueError, match=r"timeout must be .* got timeout=0"):
        DicomWebClient("http://127.0.0.1:1/dicom-web", timeout=0)
    with pytest.raises(ValueError, match=r"attempts must be an integer >= 1, got attempts=0"):
        DicomWebClient("http://127.0.0.1:1/dicom-web", attempts=0)
    with pytest.raises(ValueError, match=r"study uid must be a DICOM UID .* got '1\.2\.x'"):
        down.search_series(study_uids=["1.2.x"])
    with pytest.raises(ValueError, match="screener must have screen_datasets"):
        screen_dicomweb(object(), down)
    assert SeriesRef("1.2", "1.2.3").num_instances is None


def test_screen_command(
    pacs: OrthancServer, uploaded: list[Path], trained_xray_bundle: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's command: ``screen --dicomweb URL --stow`` screens the PACS's CR series (screen's summary, names and
    versions), writes SR + JSON, and stores each SR by STOW-RS; an undelivered SR gives exit code 1."""
    bundle_dir, root, overrides = trained_xray_bundle
    tiny = [f"{k}={json.dumps(v)}" for k, v in overrides.items() if k != "bundle_root"]
    base = ["screen", "--bundle", str(bundle_dir), "--bundle-root", str(root), "--dicomweb", pacs.dicomweb_url,
            "--modality", "CR", "DX", "--override", *tiny]
    before = len(pacs.get("/instances"))
    assert cli_main([*base, "--output", str(tmp_path / "out"), "--stow"]) == 0
    summary = json.loads((tmp_path / "out" / "screening_summary.json").read_text())
    cr_series = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in uploaded
                 if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CR"}
    assert summary["inputs"] == [pacs.dicomweb_url] and summary["counts"]["screened"] == len(cr_series)
    assert {r["series_instance_uid"] for r in summary["results"]} == cr_series
    for record in summary["results"]:
        sr = pydicom.dcmread(record["files"]["sr"])
        assert record["stow"] == [str(sr.SOPInstanceUID)]
    assert len(pacs.get("/instances")) == before + len(cr_series)  # one SR stored per series
    # a STOW-RS destination that is down: the results are still written, the failure printed, exit code 1
    capsys.readouterr()
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert cli_main([*base, "--output", str(tmp_path / "out2"), "--stow-url", down]) == 1
    assert "undelivered" in capsys.readouterr().out
    failed = json.loads((tmp_path / "out2" / "screening_summary.json").read_text())["results"]
    assert failed and all("STOW-RS to" in r["stow"] and Path(r["files"]["json"]).is_file() for r in failed)
    assert cli_main(["screen", "--bundle", str(bundle_dir), "--input", str(tmp_path), "--output", str(tmp_path / "x"),
                     "--stow"]) == 2  # --stow needs --dicomweb
