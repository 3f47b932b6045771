# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Regression tests of issue 18's six findings ("safe in a hospital network"), each of which failed on main: path
traversal through UIDs, one file stopping the run, acknowledged instances lost by the node, garbage given a verdict,
CLI faults (overrides, modality values, corrupt model files), and the smaller items."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from monai_robust.data.image_reader import DicomReader
from monai_robust.integrations.dicom import DicomNode, DicomScreener, SeriesRules, screen, write_result
from monai_robust.integrations.dicom.cli import main as cli_main
from tests.integrations.orthanc import free_port

REPO = Path(__file__).resolve().parents[3]
CT_RULES = SeriesRules(modalities=("CT",))


@pytest.fixture(scope="module")
def ct_screener(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> DicomScreener:
    bundle_dir, _, overrides = trained_xray_bundle
    return DicomScreener(bundle_dir, CT_RULES, device="cpu", overrides=overrides)


def _slices(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "dicom" / "ct_series").glob("*.dcm"))


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- 1. path traversal ----------------------------------------------------------------------------------------------
HOSTILE = ["../../escaped_series", "/tmp/monai_robust_abs_escape", "1.2.3/4", "..", "1" * 80]


def test_hostile_series_uids_stay_inside_output(ct_screener: DicomScreener, shared_data: Path, tmp_path: Path) -> None:
    inputs, out = tmp_path / "deep" / "in", tmp_path / "deep" / "out"
    inputs.mkdir(parents=True)
    source = pydicom.dcmread(_slices(shared_data)[1])
    for i, uid in enumerate(HOSTILE):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, f"1.2.3.{i}"
        _write(ds, inputs / f"{i}.dcm")
    summary = screen(ct_screener, [inputs], out)  # used to raise FileNotFoundError for "1.2.3/4"
    assert summary["counts"]["screened"] == len(HOSTILE) and summary["exit_code"] == 0
    written = _all_files(tmp_path) - _all_files(inputs)
    assert written and all(p.parent == out for p in written), sorted(map(str, written))
    assert not Path("/tmp/monai_robust_abs_escape.json").exists() and not list(tmp_path.glob("escaped*"))
    names = [Path(r["files"]["json"]).name for r in summary["results"]]
    assert all(n.startswith("h") and "/" not in n for n in names)  # invalid UIDs are hashed, never used as names


def test_same_series_uid_two_patients_and_rescreen_never_overwrite(
    ct_screener: DicomScreener, shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    a = pydicom.dcmread(_slices(shared_data)[1])
    b = copy.deepcopy(a)
    b.PatientID, b.SOPInstanceUID = "OTHER-PATIENT", "1.2.3.99"  # same StudyInstanceUID and SeriesInstanceUID
    ra, rb = ct_screener.screen_datasets([a])[0], ct_screener.screen_datasets([b])[0]
    pa, pb = write_result(ra, tmp_path), write_result(rb, tmp_path)
    assert pa["json"] != pb["json"] and pa["sr"] != pb["sr"]
    again = write_result(ct_screener.screen_datasets([a])[0], tmp_path)  # a re-screen: version 2, says so
    assert again["json"].name.endswith(".v2.json") and pa["json"].is_file()
    assert json.loads(again["json"].read_text())["version"] == 2 and "version 2" in caplog.text
    assert json.loads(pa["json"].read_text())["images"][0]["sop_instance_uid"] == a.SOPInstanceUID


def test_node_hostile_uid_with_destination_down(shared_data: Path, tmp_path: Path, ct_screener: DicomScreener) -> None:
    ds = pydicom.dcmread(_slices(shared_data)[1])
    ds.SeriesInstanceUID = "../../escaped_node"
    with DicomNode(
        ct_screener, ae_title="NODE", port=0, destination=f"GONE@127.0.0.1:{free_port()}",
        undelivered_dir=tmp_path / "deep" / "undelivered",
    ) as node:  # fmt: skip
        assert _store(node.port, [ds]) == [0]
        (rec,) = node.wait_for_records(1, timeout=60)
    assert rec.status == "screened" and not rec.delivery.ok
    assert rec.files["sr"].parent == tmp_path / "deep" / "undelivered" and rec.files["sr"].is_file()
    assert not list(tmp_path.glob("escaped*")) and not list((tmp_path / "deep").glob("escaped*"))


# --- 2. one file never stops the run ---------------------------------------------------------------------------------
def test_bad_transfer_syntax_and_unknown_vr_are_that_files_error(
    trained_xray_bundle: tuple[Path, Path, dict[str, Any]], shared_data: Path, tmp_path: Path, capsys: Any
) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = _slices(shared_data)[1].read_bytes()
    (inputs / "good.dcm").write_bytes(good)
    (inputs / "bad_syntax.dcm").write_bytes(good.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.9\x00", 1))
    (inputs / "bad_vr.dcm").write_bytes(good.replace(b"\x08\x00\x16\x00UI", b"\x08\x00\x16\x00QI", 1))
    tiny = [f"{k}={v}" for k, v in overrides.items() if k != "bundle_root"]
    args = ["screen", "--bundle", str(bundle_dir), "--bundle-root", str(root), "--input", str(inputs)]
    code = cli_main([*args, "--output", str(tmp_path / "out"), "--modality", "CT", "--override", *tiny])
    printed = capsys.readouterr().out
    assert code == 1  # some files failed; 2 is kept for "the tool could not run"
    summary = json.loads((tmp_path / "out" / "screening_summary.json").read_text())
    assert summary["counts"] == {"screened": 1, "skipped": 0, "not screened": 0, "failed": 2}
    for name, why in (("bad_syntax.dcm", "transfer syntax"), ("bad_vr.dcm", "Unknown Value Representation 'QI'")):
        (r,) = [r for r in summary["results"] if r["sources"] == [str(inputs / name)]]
        assert r["status"] == "failed" and str(inputs / name) in r["reason"] and why in r["reason"], r["reason"]
        assert str(inputs / name) in printed
    assert cli_main([*args, "--output", str(tmp_path / "out"), "--modality", "CT", "--override", "x"]) == 2


# --- 3. the node loses no acknowledged instance ----------------------------------------------------------------------
def _store(port: int, datasets: list[Any], called: str = "NODE") -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _wait_echo(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited with {proc.returncode}: {proc.stderr.read()[-3000:]}"
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.3)
    raise TimeoutError("serve did not answer C-ECHO")


@pytest.mark.timeout(400)
def test_kill_mid_series_and_restart_loses_no_acknowledged_instance(
    trained_xray_bundle: tuple[Path, Path, dict[str, Any]], shared_data: Path, tmp_path: Path
) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    port, out, spool = free_port(), tmp_path / "out", tmp_path / "spool"
    cmd = [sys.executable, "-m", "monai_robust.dicom", "serve", "--bundle", str(bundle_dir), "--bundle-root", str(root),
           "--ae-title", "NODE", "--port", str(port), "--output", str(out), "--spool", str(spool), "--modality", "CT",
           "--series-timeout", "0", "--log-level", "WARNING", "--override",
           *(f"{k}={v}" for k, v in overrides.items() if k != "bundle_root")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    slices = [pydicom.dcmread(p) for p in _slices(shared_data)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_echo(port, proc)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
        acked = [ds.SOPInstanceUID for ds in slices[:2] if int(assoc.send_c_store(ds).Status) == 0]
        proc.send_signal(signal.SIGKILL)  # mid-series: the association is still open
        proc.wait(30)
        assoc.abort()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) == 2
    spooled = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in spool.rglob("*.dcm")}
    assert set(acked) <= spooled  # on disk when Success was sent
    assert not list(out.glob("*.json"))  # the kill came before any screening

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_echo(port, proc)
        deadline = time.monotonic() + 120
        while not list(out.glob("*.json")):
            assert time.monotonic() < deadline and proc.poll() is None, "the spool was not resumed"
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["partial"] is True and "partial" in record["reason"]
    assert {i["sop_instance_uid"] for i in record["images"]} == set(acked)
    sr = pydicom.dcmread(Path(record["sr"]["path"]))
    assert sr.CompletionFlag == "PARTIAL"
    assert not any(p.is_file() for p in spool.rglob("*"))  # screened, then cleared


def test_stop_mid_association_marks_partial_and_two_associations_two_versions(
    ct_screener: DicomScreener, shared_data: Path, tmp_path: Path
) -> None:
    slices = [pydicom.dcmread(p) for p in _slices(shared_data)]
    node = DicomNode(ct_screener, ae_title="NODE", port=0, output_dir=tmp_path, series_timeout=None).start()
    assert _store(node.port, slices[:2]) == [0, 0]  # a first association, released: complete
    node.wait_for_records(1, timeout=60)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NODE")
    assert all(int(assoc.send_c_store(ds).Status) == 0 for ds in slices[2:])
    node.stop()  # what SIGTERM does: the open association is aborted, its series screened as partial
    first, second = node.records
    assert (first.partial, second.partial) == (False, True) and "partial" in second.reason
    assert first.files["json"] != second.files["json"] and first.files["json"].is_file()
    assert json.loads(second.files["json"].read_text())["version"] == 2
    assert pydicom.dcmread(second.files["sr"]).CompletionFlag == "PARTIAL"
    assert pydicom.dcmread(first.files["sr"]).CompletionFlag == "COMPLETE"


def test_association_limit_is_an_option(capsys: Any) -> None:
    class Idle:
        def screen_datasets(self, datasets: Any, partial: Any = ()) -> list:
            return []

    with DicomNode(Idle(), ae_title="NODE", port=0, max_associations=2, undelivered_dir=Path("/tmp")) as node:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        held = [ae.associate("127.0.0.1", node.port, ae_title="NODE") for _ in range(2)]
        third = ae.associate("127.0.0.1", node.port, ae_title="NODE")
        assert all(a.is_established for a in held) and third.is_rejected
        for a in held:
            a.release()
    with pytest.raises(ValueError, match="max_associations"):
        DicomNode(Idle(), max_associations=0)
    assert cli_main(["serve", "--help"]) == 0 and "--max-associations" in capsys.readouterr().out


# --- 4. garbage gets no verdict --------------------------------------------------------------------------------------
def test_corrupt_values_are_not_screened_and_reader_errors_name_the_file(
    ct_screener: DicomScreener, shared_data: Path, tmp_path: Path
) -> None:
    source = pydicom.dcmread(_slices(shared_data)[2])
    cases = {"slope0": ("RescaleSlope", 0), "intercept": ("RescaleIntercept", 1e9), "intercept38": ("RescaleIntercept", 1e38), "slope_nan": ("RescaleSlope", "NaN"),
             "frames0": ("NumberOfFrames", 0), "slope_huge": ("RescaleSlope", 1e30)}  # fmt: skip
    paths = {}
    for i, (name, (key, value)) in enumerate(cases.items()):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = f"1.2.826.99.{i}", f"1.2.826.99.{i}.1"
        setattr(ds, key, value)
        paths[name] = _write(ds, tmp_path / f"{name}.dcm")
    by_name = {Path(r.sources[0]).stem: r for r in ct_screener.screen_files(list(paths.values()))}
    for name in ("slope0", "intercept", "intercept38", "slope_huge"):
        r = by_name[name]
        assert r.status == "not screened" and not r.predictions and r.sr is None, (name, r.reason)
        assert str(paths[name]) in r.reason
    assert "constant image" in by_name["slope0"].reason and "off-window" in by_name["intercept"].reason
    assert "constant image (every pixel value is 1e+38)" in by_name["intercept38"].reason  # float32 swallows the rest
    for name, why in (("slope_nan", "not finite"), ("frames0", "NumberOfFrames is 0")):
        r = by_name[name]
        assert r.status == "failed" and str(paths[name]) in r.reason and why in r.reason, r.reason
    reader = DicomReader()
    for name in ("slope_nan", "frames0"):
        with pytest.raises(ValueError, match=str(paths[name])):
            reader.get_data(reader.read(paths[name]))
    no_photometric = copy.deepcopy(source)
    del no_photometric.PhotometricInterpretation
    path = _write(no_photometric, tmp_path / "no_photometric.dcm")
    with pytest.raises(ValueError, match=str(path)):
        reader.frames(pydicom.dcmread(path))


# --- 5. strict command line ----------------------------------------------------------------------------------------
def test_cli_refuses_unknown_overrides_bad_modalities_and_corrupt_model_files(
    trained_xray_bundle: tuple[Path, Path, dict[str, Any]], shared_data: Path, tmp_path: Path, capsys: Any
) -> None:
    bundle_dir, root, overrides = trained_xray_bundle
    tiny = [f"{k}={v}" for k, v in overrides.items() if k != "bundle_root"]
    base = ["--bundle", str(bundle_dir), "--bundle-root", str(root)]
    screen_args = ["screen", *base, "--input", str(_slices(shared_data)[0]), "--output", str(tmp_path / "o")]
    assert cli_main([*screen_args, "--override", "image_sise=16", *tiny]) == 2
    assert "unknown config id(s) 'image_sise' (did you mean 'image_size'" in capsys.readouterr().err
    assert cli_main([*screen_args, "--modality", "README.md", "pyproject.toml", "--override", *tiny]) == 2  # '*'
    assert "'README.MD' is not a DICOM Modality defined term" in capsys.readouterr().err
    assert cli_main([*screen_args, "--modality", "CTT", "--override", *tiny]) == 2
    assert "did you mean CT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    for name, content in (("model.pt", b""), ("model.pt", b"PK\x03\x04garbage"), ("guard.pt", b"\x80\x02}q")):
        broken = tmp_path / f"root_{name}_{len(content)}"
        shutil.copytree(root, broken)
        (broken / "models" / name).write_bytes(content)
        args = ["--bundle", str(bundle_dir), "--bundle-root", str(broken), "--override", *tiny]
        assert (
            cli_main(["screen", *args, "--input", str(_slices(shared_data)[0]), "--output", str(tmp_path / "x")]) == 2
        )
        assert str(broken / "models" / name) in capsys.readouterr().err
        assert cli_main(["serve", *args, "--port", "0"]) == 2
        assert str(broken / "models" / name) in capsys.readouterr().err


# --- 6. smaller items ----------------------------------------------------------------------------------------------
def test_colour_into_grey_model_skipped_and_odd_entries_reported(
    ct_screener: DicomScreener, shared_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "x.dcm").mkdir()
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "missing.dcm")
    shutil.copy(shared_data / "dicom" / "US1_UNCR.dcm", tmp_path / "us.dcm")
    screener = DicomScreener(ct_screener.predictor, SeriesRules(modalities=("US",)))
    summary = screen(screener, [tmp_path], tmp_path / "out")
    by_source = {r["sources"][0]: r for r in summary["results"]}
    us = by_source[str(tmp_path / "us.dcm")]
    assert us["status"] == "skipped" and "not for this model: a 3-channel (colour) image" in us["reason"]
    assert "dangling symbolic link" in by_source[str(tmp_path / "gone.dcm")]["reason"]
    assert "a folder named like a DICOM file" in by_source[str(tmp_path / "x.dcm")]["reason"]
    assert summary["exit_code"] == 1  # the dangling link is a failure; the US and the empty folder are not
