# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOM screening on the real files of ``../shared/data/dicom`` (JPEG 2000 CR, CT, enhanced CT, MR, multi-frame MR,
RGB US, a 4-slice CT series) and the bundle's embedded phantoms, with a tiny trained X-ray bundle and its guard:
SR content read back with pydicom and highdicom, bad files, non-image objects and the CLI's exit codes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import SegmentationStorage, generate_uid

from monai_robust.dicom import main as cli_main
from monai_robust.integrations.dicom import (
    CODING_SCHEME,
    DicomScreener,
    SeriesRules,
    find_dicom_files,
    non_image_reason,
    result_stem,
    write_result,
)
from tests.utils import run_bundle

REPO = Path(__file__).resolve().parents[3]
# highdicom warns about source patient names of one component (e.g. "CQ500-CT-310"): the sources are real files
pytestmark = pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name")


@pytest.fixture(scope="module")
def screener(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> DicomScreener:
    """A screener built from the bundle folder (CR/DX rules); other rules reuse its predictor."""
    bundle_dir, _, overrides = trained_xray_bundle
    return DicomScreener(bundle_dir, SeriesRules(modalities=("CR", "DX")), device="cpu", overrides=overrides)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


def _items(ds: Any) -> list[Any]:
    """Every content item of an SR tree, depth first."""
    out = []
    for item in getattr(ds, "ContentSequence", []):
        out.append(item)
        out.extend(_items(item))
    return out


def _meaning(item: Any) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def test_cr_j2k_sr_read_back(screener: DicomScreener, shared_data: Path, cr_in_window: Path, tmp_path: Path) -> None:
    folder = shared_data / "dicom"
    before = _hashes(folder)
    results = screener.screen_files([folder])
    assert _hashes(folder) == before  # inputs never modified
    # the real CR's values (6255..31964) lie wholly outside the phantoms' [0, 4095] window: no verdict (finding 4)
    (cr,) = [r for r in results if r.status != "skipped"]
    assert cr.status == "not screened" and not cr.predictions and cr.sr is None
    assert "RG1_J2KI.dcm: off-window: 0.0% of the pixel values" in cr.reason
    assert all(
        "Modality" in r.reason and "not one of ['CR', 'DX']" in r.reason for r in results if r.status == "skipped"
    )

    (res,) = screener.screen_files([cr_in_window])  # the same file with RescaleSlope 0.125: 782..3995
    assert res.status == "screened"
    source = pydicom.dcmread(folder / "RG1_J2KI.dcm", stop_before_pixels=True)
    assert (res.study_uid, res.series_uid) == (source.StudyInstanceUID, source.SeriesInstanceUID)
    (pred,) = res.predictions
    assert pred["sop_instance_uid"] == source.SOPInstanceUID and pred["frame"] is None
    assert pred["guard"] is not None and set(pred["guard"]) == {"adversarial_suspected", "score", "threshold"}
    assert (
        pred["outside_intensity_window"] is False
        and 700 < pred["intensity_range"][0] < pred["intensity_range"][1] < 4095
    )

    paths = write_result(res, tmp_path)
    stem = result_stem(source.PatientID, res.study_uid, res.series_uid, screener.predictor.name)
    assert stem.startswith(res.series_uid + "_")  # a valid UID names the file; a hash of the patient etc. follows
    assert paths["sr"].name == f"{stem}.SR.dcm" and paths["json"].name == f"{stem}.json"
    sr = pydicom.dcmread(paths["sr"])
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (ref_series,) = evidence.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ref_series.ReferencedSOPSequence] == [source.SOPInstanceUID]

    report = hd.sr.srread(paths["sr"])
    (group,) = report.content.get_image_measurement_groups()
    assert (
        group.finding_type.meaning == pred["predicted_class"] and group.finding_type.scheme_designator == CODING_SCHEME
    )
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    for name, p in pred["probabilities"].items():
        assert values[f"Probability of {name}"] == pytest.approx(p, rel=1e-6)
    assert values["Adversarial detector score"] == pytest.approx(pred["guard"]["score"], rel=1e-6)
    assert values["Adversarial detector threshold"] == pytest.approx(pred["guard"]["threshold"], rel=1e-6)
    verdicts = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
    assert verdicts["Adversarial input suspected"] == ("Yes" if pred["guard"]["adversarial_suspected"] else "No")
    assert verdicts["Intensity outside model window"] == "No"
    (src,) = group.source_images
    assert src.referenced_sop_instance_uid == source.SOPInstanceUID
    texts = {_meaning(i): str(i.TextValue) for i in _items(sr) if "TextValue" in i}
    assert (
        texts["Algorithm Name"] == screener.predictor.name and texts["Algorithm Version"] == screener.predictor.version
    )

    record = json.loads(paths["json"].read_text())  # the sidecar holds the same content
    assert record["status"] == "screened" and record["outside_intensity_window"] is False
    assert record["images"][0]["probabilities"] == pytest.approx(pred["probabilities"])
    assert record["images"][0]["guard"] == pytest.approx(pred["guard"])
    assert (
        record["model"]["name"] == screener.predictor.name and record["model"]["version"] == screener.predictor.version
    )
    assert record["sr"]["sop_instance_uid"] == sr.SOPInstanceUID


def test_ct_mr_slices_and_frames(screener: DicomScreener, shared_data: Path) -> None:
    ct_mr = DicomScreener(screener.predictor, SeriesRules(modalities=("ct", "MR")))
    results = {r.series_uid: r for r in ct_mr.screen_files(shared_data / "dicom") if r.status != "skipped"}
    by_file = {}
    for f in find_dicom_files(shared_data / "dicom"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_file[f.name] = ds
    assert len(results) == 5 and all(r.status == "screened" for r in results.values())
    series = results[by_file["7106.dcm"].SeriesInstanceUID]  # 4-slice classic series: one image per slice
    assert len(series.predictions) == 4 and {p["frame"] for p in series.predictions} == {None}
    emri = results[by_file["emri_small.dcm"].SeriesInstanceUID]  # enhanced multi-frame MR: one image per frame
    assert [p["frame"] for p in emri.predictions] == list(range(1, 11))
    groups = hd.sr.ComprehensiveSR.from_dataset(emri.sr, copy=True).content.get_image_measurement_groups()
    assert [g.source_images[0].referenced_frame_numbers for g in groups] == [[i] for i in range(1, 11)]
    ect = results[by_file["eCT_Supplemental.dcm"].SeriesInstanceUID]
    assert [p["frame"] for p in ect.predictions] == [1, 2]
    assert results[by_file["MR2_UNCR.dcm"].SeriesInstanceUID].summary["images_screened"] == 1


def test_bad_files_reported_and_run_continues(
    screener: DicomScreener, shared_data: Path, cr_in_window: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(os.urandom(300))
    truncated = tmp_path / "truncated.dcm"
    data = (shared_data / "dicom" / "ct_series" / "7106.dcm").read_bytes()
    truncated.write_bytes(data[: len(data) - 200])
    rules = SeriesRules(modalities=("US", "CR", "CT"))
    inputs = [shared_data / "dicom" / "US1_UNCR.dcm", junk, cr_in_window, truncated]
    results = DicomScreener(screener.predictor, rules).screen_files(inputs)
    statuses = sorted(r.status for r in results)
    assert statuses == ["failed", "failed", "screened", "skipped"]  # the CR is screened despite the others
    us = next(r for r in results if r.sources == [str(inputs[0])])
    assert us.status == "skipped" and us.sr is None and us.ok and not us.predictions  # finding 6: not a failure
    assert "US1_UNCR.dcm: not for this model: a 3-channel (colour) image, the model takes 1 channel(s)" in us.reason
    bad = next(r for r in results if r.sources == [str(junk)])
    assert bad.series_uid == "" and str(junk) in bad.errors[0] and "not a DICOM file" in bad.errors[0]
    trunc = next(r for r in results if r.sources == [str(truncated)])
    assert "truncated.dcm: truncated pixel data" in trunc.reason
    paths = write_result(bad, tmp_path / "out")
    assert set(paths) == {"json"} and json.loads(paths["json"].read_text())["sources"] == [str(junk)]


def test_non_image_objects_skipped(
    screener: DicomScreener, shared_data: Path, cr_in_window: Path, tmp_path: Path
) -> None:
    ct = pydicom.dcmread(shared_data / "dicom" / "ct_series" / "7106.dcm")
    seg = copy.deepcopy(ct)  # a SEG-like object: segmentation SOP class, with pixel data
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = SegmentationStorage
    seg.Modality = "SEG"
    seg.SeriesInstanceUID, seg.SOPInstanceUID = generate_uid(), generate_uid()
    no_pixels = copy.deepcopy(ct)
    del no_pixels.PixelData
    no_pixels.SeriesInstanceUID, no_pixels.SOPInstanceUID = generate_uid(), generate_uid()
    assert non_image_reason(ct) is None and "Segmentation Storage" in non_image_reason(seg)
    assert "no Pixel Data" in non_image_reason(no_pixels)

    anything = DicomScreener(screener.predictor, SeriesRules(modalities=None))
    results = anything.screen_datasets([seg, no_pixels])
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert "non-image object" in results[0].reason and "SEG" in results[0].reason
    assert "no Pixel Data" in results[1].reason

    # an SR written by a previous run, read from disk among the images, is skipped too
    cr = DicomScreener(screener.predictor).screen_files(cr_in_window)[0]
    again = anything.screen_files(write_result(cr, tmp_path)["sr"])
    assert [r.status for r in again] == ["skipped"] and "Comprehensive SR Storage" in again[0].reason


def test_rules() -> None:
    ds = pydicom.Dataset()
    ds.Modality, ds.ImageType, ds.BodyPartExamined = "CR", ["DERIVED", "PRIMARY"], "CHEST"
    assert SeriesRules(modalities=("cr",), image_types=("primary",), body_parts=("chest",)).mismatch(ds) is None
    assert "lacks ['ORIGINAL']" in SeriesRules(modalities=None, image_types=("ORIGINAL",)).mismatch(ds)
    assert "BodyPartExamined 'CHEST'" in SeriesRules(modalities=None, body_parts=("HEAD",)).mismatch(ds)
    del ds.BodyPartExamined
    assert "'<missing>'" in SeriesRules(body_parts=("CHEST",)).mismatch(ds)
    with pytest.raises(ValueError, match="non-empty"):
        SeriesRules(modalities=())
    with pytest.raises(ValueError, match="rules must be a SeriesRules"):
        DicomScreener(object(), rules={"modalities": ["CR"]})


def test_embedded_phantoms(screener: DicomScreener, trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> None:
    _, root, _ = trained_xray_bundle
    results = screener.screen_files(root / "data")
    phantoms = [r for r in results if r.status != "failed"]
    assert len(phantoms) == 24 and all(r.status == "screened" and r.sr is not None for r in phantoms)
    assert all(not r.summary["outside_intensity_window"] for r in phantoms)  # stored values within [0, 4095]
    # the datalist JSON is the only non-DICOM file in the data folder: reported by path, not fatal
    assert [Path(r.sources[0]).name for r in results if r.status == "failed"] == ["dataset.json"]


def test_cli_exit_codes(
    trained_xray_bundle: tuple[Path, Path, dict[str, Any]], cr_in_window: Path, tmp_path: Path, capsys: Any
) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "chest.dcm").write_bytes(cr_in_window.read_bytes())
    (inputs / "corrupt.dcm").write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(64))
    tiny = [f"{k}={v}" for k, v in overrides.items() if k != "bundle_root"]
    args = ["screen", "--bundle", str(bundle_dir), "--bundle-root", str(root), "--input", str(inputs), "--output"]
    cmd = [sys.executable, "-m", "monai_robust.dicom", *args, str(tmp_path / "out"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, "--override", *tiny], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "corrupt.dcm" in proc.stdout and "1 screened, 0 skipped, 0 not screened, 1 failed" in proc.stdout
    summary = json.loads((tmp_path / "out" / "screening_summary.json").read_text())
    assert summary["counts"] == {"screened": 1, "skipped": 0, "not screened": 0, "failed": 1}
    assert len(list((tmp_path / "out").glob("*.SR.dcm"))) == 1

    (inputs / "corrupt.dcm").unlink()
    assert cli_main([*args, str(tmp_path / "out2"), "--override", *tiny, "--quiet"]) == 0
    assert cli_main([*args, str(tmp_path / "out2"), "--override", *tiny, "--quiet"]) == 0  # again: a new version
    assert "[version 2: earlier results kept]" in capsys.readouterr().out
    assert len(list((tmp_path / "out2").glob("*.SR.dcm"))) == 2
    assert cli_main([*args, str(tmp_path / "out3"), "--modality", "MR", "--override", *tiny, "--quiet"]) == 0  # skipped

    assert cli_main(["screen", "--bundle", str(bundle_dir)]) == 2  # argparse: --input and --output missing
    assert cli_main([]) == 2
    assert cli_main(["screen", "--bundle", str(bundle_dir), "--input", str(tmp_path / "no"), "--output", "x"]) == 2
    empty_root = tmp_path / "untrained"
    assert cli_main([*args, str(tmp_path / "out4"), "--bundle-root", str(empty_root), "--override", *tiny]) == 2


def test_missing_optional_tags_and_duplicates(screener: DicomScreener, shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / "ct_series" / "7106.dcm")
    optional = "PatientName PatientID PatientBirthDate PatientSex StudyDate StudyTime StudyID AccessionNumber "
    optional += "ReferringPhysicianName Manufacturer InstanceNumber SeriesNumber PixelSpacing ImagePositionPatient "
    optional += "ImageOrientationPatient ImageType BodyPartExamined RescaleSlope RescaleIntercept WindowWidth"
    for key in optional.split():
        if key in ds:
            delattr(ds, key)
    (res,) = DicomScreener(screener.predictor, SeriesRules(modalities=("CT",))).screen_datasets([ds, copy.deepcopy(ds)])
    assert res.status == "screened" and len(res.predictions) == 1 and res.sr is not None
    assert res.sr.StudyInstanceUID == ds.StudyInstanceUID and "PatientID" in res.sr and not res.sr.PatientID
    assert "duplicate of SOP instance" in res.skipped_instances[0]


def test_3d_bundle_screens_volumes(shared_data: Path, tmp_path: Path) -> None:
    """A 3D bundle takes the position-sorted slices of a classic series, or the frames of a multi-frame instance, as
    one volume; a single 2D image is refused with the reason."""
    bundle = REPO / "bundles" / "robust_ct_classification"
    tiny = {"num_images": 20, "image_size": 16, "batch_size": 4}
    run_bundle(bundle, ["train.json"], tmp_path, num_epochs=1, **tiny)
    screener = DicomScreener(
        bundle, SeriesRules(modalities=("CT", "MR")), overrides={"bundle_root": str(tmp_path), **tiny}
    )
    folder = shared_data / "dicom"
    results = screener.screen_files([folder / "ct_series", folder / "emri_small.dcm", folder / "693_UNCR.dcm"])
    series, emri, single = results
    assert series.status == "screened" and len(series.predictions) == 1
    slices = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((folder / "ct_series").iterdir())]
    assert sorted(series.predictions[0]["sop_instance_uids"]) == sorted(s.SOPInstanceUID for s in slices)
    group = hd.sr.ComprehensiveSR.from_dataset(series.sr, copy=True).content.get_image_measurement_groups()[0]
    assert len(group.source_images) == 4  # the group references every slice of the volume
    assert emri.status == "screened" and len(emri.predictions) == 1 and emri.predictions[0]["frame"] is None
    assert single.status == "failed" and "693_UNCR.dcm" in single.reason and "3D bundle" in single.reason
