# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The DICOM network node: unit tests against pynetdicom peers (a fake screener, so they run without a bundle), then
the real path against a throwaway Orthanc PACS with the real screener and a trained bundle."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from monai_robust.integrations.dicom import DicomNode, DicomPeer, validate_ae_title
from monai_robust.integrations.dicom.cli import main as cli_main
from tests.integrations.orthanc import OrthancServer, free_port, require_orthanc

LOGGER = "monai_robust.integrations.dicom.node"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


# --- helpers ------------------------------------------------------------------------------------------------------
@dataclass
class FakeResult:
    study_uid: str
    series_uid: str
    status: str
    reason: str = ""
    predictions: list = field(default_factory=list)
    sr: Dataset | None = None
    summary: dict = field(default_factory=dict)


class FakeScreener:
    """Screens CT series (one "prediction" per image, a Basic Text SR per series); other modalities are skipped."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.partial: list[tuple[str, str]] = []

    def screen_datasets(self, datasets: list[Dataset], partial: Any = ()) -> list[FakeResult]:
        self.calls.append(len(datasets))
        self.partial.extend(partial)
        groups: dict[tuple[str, str], list[Dataset]] = {}
        for ds in datasets:
            groups.setdefault((ds.StudyInstanceUID, ds.SeriesInstanceUID), []).append(ds)
        out = []
        for (study, series), dss in groups.items():
            if dss[0].Modality != "CT":
                out.append(FakeResult(study, series, "skipped", f"Modality {dss[0].Modality!r} is not in ('CT',)"))
                continue
            preds = [
                {
                    "sop_instance_uid": d.SOPInstanceUID,
                    "predicted_class": "normal",
                    "probabilities": {"normal": 0.9},
                    "guard": {"adversarial_suspected": False, "score": -1.0, "threshold": 0.5},
                }
                for d in dss
            ]
            out.append(FakeResult(study, series, "screened", "", preds, _basic_sr(dss[0])))
        return out


def _basic_sr(source: Dataset) -> Dataset:
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    sr.SOPClassUID = BASIC_TEXT_SR
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for tag in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
        if tag in source:
            setattr(sr, tag, source.data_element(tag).value)
    sr.SeriesInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.SeriesNumber = sr.InstanceNumber = 1
    sr.ValueType = "CONTAINER"
    sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "UNVERIFIED"
    return sr


def fake_writer(result: Any, folder: Path) -> dict[str, Path]:
    path = Path(folder) / f"{result.series_uid}.SR.dcm"
    result.sr.save_as(path, enforce_file_format=True)
    return {"sr": path}


class Sink:
    """A pynetdicom storage SCP on loopback that keeps what it receives (or refuses every association)."""

    def __init__(self, ae_title: str = "SINK", refuse: bool = False) -> None:
        self.received: list[Dataset] = []
        ae = AE(ae_title=ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        if refuse:
            ae.require_calling_aet = ["SOMEONE_ELSE"]
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.peer = DicomPeer(ae_title, "127.0.0.1", self.server.server_address[1])

    def _store(self, event: Any) -> int:
        self.received.append(event.dataset)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def store(port: int, datasets: list[Dataset], calling: str = "MODALITY", called: str = "NODE") -> list[int]:
    """C-STOREs datasets to the node in one association; returns the statuses (raises when not established)."""
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"association with the node was not established (rejected={assoc.is_rejected})"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, calling: str = "MODALITY", called: str = "NODE") -> tuple[bool, Any]:
    """C-ECHO to the node: ``(answered with success, the association)``."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False, assoc
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) == 0, assoc


def _ct_series(shared_data: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted((shared_data / "dicom" / "ct_series").glob("*.dcm"))]


def _segmentation(source: list[Dataset]) -> Dataset:
    """A real DICOM SEG (highdicom) over the CT series: a non-image SOP class the node must skip."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.zeros((len(source), source[0].Rows, source[0].Columns), bool)
    mask[:, 4:10, 4:10] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="box",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai_robust tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


# --- validation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "   ", "A" * 17, "BAD\\AE", "NODE\n", "KNOTEN_Ä", 42, None])
def test_bad_ae_titles_raise(bad):
    with pytest.raises(ValueError, match="AE title"):
        validate_ae_title(bad)
    with pytest.raises(ValueError, match="AE title"):
        DicomNode(FakeScreener(), ae_title=bad)
    with pytest.raises(ValueError, match="AE title"):
        DicomNode(FakeScreener(), allowed_ae_titles=["OK", bad])


def test_bad_configuration_raises():
    assert validate_ae_title(" ORTHANC ") == "ORTHANC"
    assert DicomPeer.parse("PACS@[::1]:104") == DicomPeer("PACS", "::1", 104)
    for spec in ("PACS@host", "host:104", "PACS@host:port", "PACS@host:70000", "@host:104"):
        with pytest.raises(ValueError, match="port|AE|AE_TITLE"):
            DicomPeer.parse(spec)
    with pytest.raises(ValueError, match="screen_datasets"):
        DicomNode(object())
    with pytest.raises(ValueError, match="no series would ever be complete"):
        DicomNode(FakeScreener(), complete_on_release=False, series_timeout=None)
    with pytest.raises(ValueError, match="series_timeout"):
        DicomNode(FakeScreener(), series_timeout=0)
    with pytest.raises(ValueError, match="not-a-host.invalid"):
        DicomNode(FakeScreener(), allowed_hosts=["not-a-host.invalid"])
    with pytest.raises(ValueError, match="port"):
        DicomNode(FakeScreener(), port=-1)


# --- the node against pynetdicom peers (fake screener) ------------------------------------------------------------
def test_node_screens_series_sends_sr_and_skips_seg(shared_data, sink, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    seg = _segmentation(ct)
    screener = FakeScreener()
    with DicomNode(
        screener,
        ae_title="NODE",
        port=0,
        destination=sink.peer,
        output_dir=tmp_path / "out",
        allowed_ae_titles=["MODALITY"],
        writer=fake_writer,
    ) as node:
        assert store(node.port, [*ct, seg]) == [0] * 5
        records = node.wait_for_records(2, timeout=20)
        node.wait_idle(timeout=20)
    by_series = {r.series_uid: r for r in records}
    ct_rec, seg_rec = by_series[ct[0].SeriesInstanceUID], by_series[seg.SeriesInstanceUID]
    assert (ct_rec.status, ct_rec.n_instances, ct_rec.calling_ae) == ("screened", 4, "MODALITY")
    assert ct_rec.delivery is not None and ct_rec.delivery.ok and ct_rec.delivery.status == 0
    assert ct_rec.files["sr"].is_file() and pydicom.dcmread(ct_rec.files["sr"]).SOPInstanceUID == ct_rec.sr_uid
    assert [d.SOPInstanceUID for d in sink.received] == [ct_rec.sr_uid]
    assert sink.received[0].StudyInstanceUID == ct[0].StudyInstanceUID
    assert (seg_rec.status, seg_rec.n_instances, seg_rec.n_skipped) == ("skipped", 0, 1)
    assert "Segmentation Storage" in seg_rec.reason
    assert screener.calls == [4]  # the SEG never reached the screener
    text = caplog.text
    assert "association from MODALITY@127.0.0.1" in text and "accepted" in text
    assert "5 instance(s) received in 2 series" in text
    assert "skipped 1 non-image instance(s) (1 x Segmentation Storage)" in text
    assert "screened: " in text and "normal p=0.900, guard clear" in text
    assert f"SR {ct_rec.sr_uid} sent to SINK@127.0.0.1:{sink.peer.port}: C-STORE status 0x0000" in text


def test_no_matching_series_is_logged(shared_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    mr = pydicom.dcmread(shared_data / "dicom" / "emri_small.dcm")
    with DicomNode(FakeScreener(), ae_title="NODE", port=0, output_dir=tmp_path, writer=fake_writer) as node:
        store(node.port, [mr])
        (rec,) = node.wait_for_records(1, timeout=20)
    assert rec.status == "skipped" and rec.sr_uid is None and not rec.files
    assert f"study {mr.StudyInstanceUID}: no series matched the screening rules" in caplog.text
    assert "Modality 'MR' is not in ('CT',)" in caplog.text


def test_refused_or_down_destination_keeps_sr_and_node_runs(shared_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    refusing = Sink("REFUSER", refuse=True)
    down = DicomPeer("GONE", "127.0.0.1", free_port())
    try:
        for dest, expect in ((refusing.peer, "association rejected"), (down, "no association")):
            with DicomNode(
                FakeScreener(),
                ae_title="NODE",
                port=0,
                destination=dest,
                writer=fake_writer,
                undelivered_dir=tmp_path / dest.ae_title,
            ) as node:
                store(node.port, ct)
                (rec,) = node.wait_for_records(1, timeout=30)
                assert rec.status == "screened" and rec.delivery is not None and not rec.delivery.ok
                assert expect in rec.delivery.message and rec.delivery.status is None
                assert rec.files["sr"].parent == tmp_path / dest.ae_title
                assert pydicom.dcmread(rec.files["sr"]).SOPInstanceUID == rec.sr_uid
                assert echo(node.port)[0]  # still serving
                store(node.port, ct[:1])  # and still screening
                node.wait_for_records(2, timeout=30)
            assert f"NOT delivered to {dest}: {rec.delivery.message}; kept at {rec.files['sr']}" in caplog.text
    finally:
        refusing.close()
    assert "Calling AE title not recognised" in caplog.text


def test_disallowed_peers_are_rejected_and_logged(shared_data, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    screener = FakeScreener()
    with DicomNode(screener, ae_title="NODE", port=0, allowed_ae_titles=["ORTHANC"], output_dir=None) as node:
        _, stranger = echo(node.port, calling="STRANGER")
        _, wrong_called = echo(node.port, calling="ORTHANC", called="NOT_NODE")
        assert echo(node.port, calling="ORTHANC")[0]  # an allowed peer still gets through
    assert stranger.is_rejected and stranger.acceptor.primitive.diagnostic == 0x03
    assert wrong_called.is_rejected and wrong_called.acceptor.primitive.diagnostic == 0x07
    assert "association from STRANGER@127.0.0.1" in caplog.text and "'STRANGER' is not in ['ORTHANC']" in caplog.text
    assert "called AE title 'NOT_NODE'" in caplog.text
    # a loopback peer when only another network is allowed
    with DicomNode(screener, ae_title="NODE", port=0, allowed_hosts=["10.11.0.0/16"]) as node:
        assert echo(node.port)[1].is_rejected
        assert echo(node.port)[1].is_rejected  # still answering, still rejecting
    assert "address 127.0.0.1 is not in the allowed hosts ['10.11.0.0/16']" in caplog.text
    assert screener.calls == []


def test_series_complete_on_idle_timeout(shared_data):
    ct = _ct_series(shared_data)
    with DicomNode(
        FakeScreener(), ae_title="NODE", port=0, complete_on_release=False, series_timeout=0.3, writer=fake_writer
    ) as node:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ct[0].SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NODE")
        try:
            assert all(int(assoc.send_c_store(ds).Status) == 0 for ds in ct)
            t0 = time.monotonic()
            (rec,) = node.wait_for_records(1, timeout=10)  # while the association is still open
            assert assoc.is_established and time.monotonic() - t0 < 5
        finally:
            assoc.release()
    assert rec.status == "screened" and rec.n_instances == 4


def test_stop_screens_series_of_open_associations(shared_data, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    node = DicomNode(FakeScreener(), ae_title="NODE", port=0, series_timeout=None, writer=fake_writer).start()
    with pytest.raises(RuntimeError, match="not running"):
        DicomNode(FakeScreener()).request_move("PACS@127.0.0.1:4242", "1.2.3")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ct[0].SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NODE")
    assert int(assoc.send_c_store(ct[0]).Status) == 0
    node.stop()  # the association is still open: aborted, and what it delivered is screened, not dropped
    assert not assoc.is_established
    (rec,) = node.records
    assert rec.status == "screened" and rec.n_instances == 1
    assert "stopping: aborting 1 open association(s)" in caplog.text


def test_serve_cli_bad_arguments(capsys):
    assert cli_main(["serve", "--ae-title", "X"]) == 2  # --bundle missing
    assert "--bundle" in capsys.readouterr().err
    for args, expect in (
        (["--ae-title", "BAD\\AE"], "--ae-title 'BAD\\\\AE' has characters not allowed"),
        (["--destination", "ORTHANC@localhost"], "'AE_TITLE@host:port', got 'ORTHANC@localhost'"),
        (["--allow-ae", "A" * 17], "--allow-ae must have at most 16 characters"),
        (["--override", "image_size"], "--override expects ID=VALUE"),
        ([], "'does/not/exist' is not a bundle folder"),
    ):
        assert cli_main(["serve", "--bundle", "does/not/exist", "--port", "0", *args]) == 2
        assert expect in capsys.readouterr().err


# --- a real PACS: Orthanc on loopback, the real screener and a trained bundle ----------------------------------------
ORTHANC_AET = "ORTHANC"
NODE_AET = "MONAI_NODE"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    require_orthanc()  # skips with a message when the Orthanc binary is absent
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), aet=ORTHANC_AET).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def xray_predictor(pacs, trained_xray_bundle):
    from monai_robust.bundle.predictor import BundlePredictor

    bundle_dir, _, overrides = trained_xray_bundle
    return BundlePredictor(bundle_dir, **overrides)


@pytest.fixture(scope="module")
def node(pacs, xray_predictor, tmp_path_factory):
    from monai_robust.integrations.dicom import DicomScreener

    out = tmp_path_factory.mktemp("node_out")
    n = DicomNode(
        DicomScreener(xray_predictor),
        ae_title=NODE_AET,
        port=0,
        allowed_ae_titles=[ORTHANC_AET],
        destination=DicomPeer(ORTHANC_AET, "127.0.0.1", pacs.dicom_port),
        output_dir=out,
    ).start()
    pacs.add_modality("monai", NODE_AET, "127.0.0.1", n.port)
    yield n
    n.stop()


def _new_records(node: DicomNode, before: int, count: int) -> list:
    return node.wait_for_records(before + count, timeout=60)[before:]


def _walk(items):
    for item in items or []:
        yield item
        yield from _walk(item.get("ContentSequence"))


def test_orthanc_sends_study_node_screens_and_sr_lands_in_study(pacs, node, cr_in_window, tmp_path, caplog):
    import highdicom as hd

    caplog.set_level(logging.INFO, logger=LOGGER)
    cr_path = cr_in_window  # RG1_J2KI.dcm with values inside the tiny bundle's window
    cr = pydicom.dcmread(cr_path, stop_before_pixels=True)
    stored = pacs.upload(cr_path)
    before = len(node.records)
    job = pacs.send_to_modality("monai", [stored["ParentStudy"]])  # Orthanc C-STOREs the study to the node
    assert job["InstancesCount"] == 1 and job["FailedInstancesCount"] == 0
    (rec,) = _new_records(node, before, 1)
    assert (rec.status, rec.calling_ae, rec.n_instances) == ("screened", ORTHANC_AET, 1)
    assert rec.delivery is not None and rec.delivery.ok and rec.delivery.status == 0x0000, rec.delivery
    assert rec.files["sr"].is_file() and rec.files["json"].is_file()

    # the SR is in Orthanc, in the same study (same patient), next to the image it reports on
    in_study = {
        i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in pacs.get(f"/studies/{stored['ParentStudy']}/instances")
    }
    assert set(in_study) == {cr.SOPInstanceUID, rec.sr_uid}
    path = tmp_path / "from_orthanc.SR.dcm"
    path.write_bytes(pacs.get(f"/instances/{in_study[rec.sr_uid]}/file"))
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR) and sr.Modality == "SR"
    assert (sr.StudyInstanceUID, sr.PatientID, sr.SOPInstanceUID) == (cr.StudyInstanceUID, cr.PatientID, rec.sr_uid)
    evidence = [
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert evidence == [cr.SOPInstanceUID]
    items = list(_walk(sr.ContentSequence))
    named = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in items if "ConceptNameCodeSequence" in i}
    pred = rec.result.predictions[0]
    prob = named["Probability of normal"].MeasuredValueSequence[0].NumericValue
    assert float(prob) == pytest.approx(pred["probabilities"]["normal"], abs=1e-4)
    suspected = named["Adversarial input suspected"].ConceptCodeSequence[0].CodeMeaning
    assert suspected == ("Yes" if pred["guard"]["adversarial_suspected"] else "No")
    # what an admin reads
    text = caplog.text
    assert f"association from {ORTHANC_AET}@127.0.0.1" in text and "1 instance(s) received in 1 series" in text
    assert f"series {cr.SeriesInstanceUID} screened: {cr.SOPInstanceUID}: " in text
    assert f"SR {rec.sr_uid} sent to {ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}: C-STORE status 0x0000" in text


def test_node_pulls_study_by_c_move_no_matching_series_and_seg(pacs, node, shared_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    seg = _segmentation(ct)
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    for p in [*sorted((shared_data / "dicom" / "ct_series").glob("*.dcm")), seg_path]:
        pacs.upload(p)
    before = len(node.records)
    moved = node.request_move(f"{ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}", ct[0].StudyInstanceUID)
    assert moved.ok and moved.status == 0x0000, moved
    records = {r.series_uid: r for r in _new_records(node, before, 2)}
    ct_rec, seg_rec = records[ct[0].SeriesInstanceUID], records[seg.SeriesInstanceUID]
    assert ct_rec.status == "skipped" and ct_rec.n_instances == 4 and "Modality 'CT'" in ct_rec.reason
    assert seg_rec.status == "skipped" and seg_rec.n_skipped == 1 and "Segmentation Storage" in seg_rec.reason
    assert ct_rec.sr_uid is None and seg_rec.sr_uid is None
    assert len(pacs.instances_of_study(ct[0].StudyInstanceUID)) == 5  # no SR was sent for it
    assert f"study {ct[0].StudyInstanceUID}: no series matched the screening rules" in caplog.text
    assert "skipped 1 non-image instance(s) (1 x Segmentation Storage)" in caplog.text


def test_orthanc_refuses_unknown_node_and_sr_is_kept(pacs, xray_predictor, shared_data, tmp_path, caplog):
    from monai_robust.integrations.dicom import DicomScreener, SeriesRules

    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    screener = DicomScreener(xray_predictor, rules=SeriesRules(modalities=("CT",)))  # 16 x 16 slices: quick
    # Orthanc stores only from the modalities it knows (DicomAlwaysAllowStore false): UNKNOWN_NODE is not one
    with DicomNode(
        screener,
        ae_title="UNKNOWN_NODE",
        port=0,
        destination=f"{ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}",
        undelivered_dir=tmp_path / "undelivered",
    ) as unknown:
        store(unknown.port, ct, called="UNKNOWN_NODE")
        (rec,) = unknown.wait_for_records(1, timeout=60)
        assert echo(unknown.port, called="UNKNOWN_NODE")[0]  # the node is still serving
    assert rec.status == "screened" and rec.sr_uid
    assert rec.delivery is not None and not rec.delivery.ok, rec.delivery
    # Orthanc 1.10 accepts the association (C-ECHO is open to all) and aborts it at the C-STORE
    assert "aborted" in rec.delivery.message or "rejected" in rec.delivery.message or rec.delivery.status, rec.delivery
    assert rec.files["sr"].parent == tmp_path / "undelivered"
    assert pydicom.dcmread(rec.files["sr"]).SOPInstanceUID == rec.sr_uid
    assert f"NOT delivered to {ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}: {rec.delivery.message}" in caplog.text
    assert all(
        i["MainDicomTags"]["SOPInstanceUID"] != rec.sr_uid for i in pacs.instances_of_study(ct[0].StudyInstanceUID)
    )


def test_node_rejects_orthanc_when_not_allowed(pacs, xray_predictor, cr_in_window, caplog):
    from monai_robust.integrations.dicom import DicomScreener

    caplog.set_level(logging.INFO, logger=LOGGER)
    stored = pacs.upload(cr_in_window)
    with DicomNode(
        DicomScreener(xray_predictor), ae_title="STRICT_NODE", port=0, allowed_ae_titles=["OTHER_PACS"]
    ) as strict:
        pacs.add_modality("strict", "STRICT_NODE", "127.0.0.1", strict.port)
        with pytest.raises(RuntimeError, match="HTTP"):
            pacs.send_to_modality("strict", [stored["ID"]])
        assert echo(strict.port, calling="OTHER_PACS", called="STRICT_NODE")[0]  # still serving its allowed peer
        assert strict.records == [] and strict.idle
    assert f"association from {ORTHANC_AET}@127.0.0.1" in caplog.text
    assert f"rejected: calling AE title '{ORTHANC_AET}' is not in ['OTHER_PACS']" in caplog.text


def test_serve_cli_receives_from_orthanc(pacs, trained_xray_bundle, cr_in_window, tmp_path, caplog):
    import re
    import threading

    caplog.set_level(logging.INFO, logger=LOGGER)
    bundle_dir, bundle_root, overrides = trained_xray_bundle
    args = [
        "--bundle",
        str(bundle_dir),
        "--bundle-root",
        str(bundle_root),
        "--ae-title",
        "CLI_NODE",
        "--port",
        "0",
        "--allow-ae",
        ORTHANC_AET,
        "--destination",
        f"{ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}",
        "--output",
        str(tmp_path / "out"),
        "--override",
        *(f"{k}={v}" for k, v in overrides.items() if k != "bundle_root"),
    ]
    stop, codes = threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(cli_main(["serve", *args], stop_event=stop)), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"DICOM node CLI_NODE listening on 127\.0\.0\.1:(\d+)", caplog.text)):
            assert thread.is_alive() and time.monotonic() < deadline, (
                f"serve did not start: {codes} {caplog.text[-2000:]}"
            )
            time.sleep(0.05)
        pacs.add_modality("cli", "CLI_NODE", "127.0.0.1", int(m.group(1)))
        stored = pacs.upload(cr_in_window)
        pacs.send_to_modality("cli", [stored["ID"]])
        while not list((tmp_path / "out").glob("*.json")) or "C-STORE status" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
    assert f"sent to {ORTHANC_AET}@127.0.0.1:{pacs.dicom_port}: C-STORE status 0x0000" in caplog.text
    assert "DICOM node CLI_NODE stopped" in caplog.text
    (sr_path,) = (tmp_path / "out").glob("*.SR.dcm")
    sr_uid = pydicom.dcmread(sr_path).SOPInstanceUID
    assert sr_uid in {
        i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.get(f"/studies/{stored['ParentStudy']}/instances")
    }


def test_spool_refusal_is_not_acknowledged(shared_data, tmp_path, monkeypatch, caplog):
    """When the spool cannot take an instance (disk full, read-only), the C-STORE answer is 0xA700, not Success."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    ct = _ct_series(shared_data)
    with DicomNode(FakeScreener(), ae_title="NODE", port=0, spool_dir=tmp_path / "spool", writer=fake_writer) as node:

        def full(*args: Any) -> Path:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(node.spool, "put", full)
        assert store(node.port, ct[:2]) == [0xA700, 0xA700]
        monkeypatch.undo()
        assert store(node.port, ct[2:]) == [0, 0]  # and it goes on when the disk is back
        (rec,) = node.wait_for_records(1, timeout=20)
    assert rec.n_instances == 2 and "cannot be spooled" in caplog.text and "No space left" in caplog.text
