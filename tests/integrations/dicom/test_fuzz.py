# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Fuzz suite (issue 18): deterministic mutations of the real files of ``../shared/data/dicom`` through the reader,
``screen`` (in-process, batched) and the DICOM node over the network (pynetdicom as the client).

Per run: at least 1,000 cases across the families of :mod:`tests.integrations.dicom.mutators`; the properties: the
run never crashes or hangs, no file is written outside the output folder, every failure names its file.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.sop_class import Verification

from monai_robust.data.image_reader import DicomReader
from monai_robust.integrations.dicom import DicomNode, DicomScreener, SeriesRules, screen
from tests.integrations.dicom.mutators import FILE_MUTATORS, odd_entry

pytestmark = pytest.mark.timeout(300)  # a hang fails the run instead of stalling CI
SEED = 18
# small real files (16 x 16 CT slices, a 10-frame 64 x 64 enhanced MR, a 512 x 512 CT, an RGB US) keep it fast
BASES = ["ct_series/7106.dcm", "ct_series/7136.dcm", "emri_small.dcm", "693_UNCR.dcm", "US1_UNCR.dcm"]
ESCAPE_MARKERS = ("escaped", "monai_robust_fuzz")


def _bases(shared_data: Path) -> list[tuple[str, bytes]]:
    return [(b, (shared_data / "dicom" / b).read_bytes()) for b in BASES]


def make_cases(folder: Path, shared_data: Path, per_family: int, seed: int = SEED) -> dict[Path, str]:
    """Writes ``per_family`` mutated files per family (plus odd entries) into ``folder``; returns path -> family."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases = _bases(shared_data)
    cases: dict[Path, str] = {}
    for family, mutate in FILE_MUTATORS.items():
        for i in range(per_family):
            name, data = bases[i % len(bases)]
            path = folder / f"{family}_{i:03d}.dcm"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    path.write_bytes(mutate(data, rng))
                except Exception:  # pydicom cannot even write this mutation: the raw bytes flipped instead
                    path.write_bytes(FILE_MUTATORS["header_flip"](data, rng))
            cases[path] = family
    for i in range(max(5, per_family // 4)):
        cases[odd_entry(folder, i, rng)] = "odd_entry"
    return cases


def _files_outside(root: Path, allowed: list[Path]) -> list[Path]:
    out = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not any(a == p or a in p.parents for a in allowed):
            out.append(p)
    return out


def _escaped(tmp_path: Path) -> list[Path]:
    places = [Path("/tmp"), tmp_path.parent, tmp_path.parent.parent, Path.cwd()]
    return [p for d in places for p in d.glob("*") if any(m in p.name for m in ESCAPE_MARKERS)]


def test_fuzz_reader(shared_data: Path, tmp_path: Path) -> None:
    cases = make_cases(tmp_path / "in", shared_data, per_family=60)
    reader, outcomes = DicomReader(), Counter()
    for path, family in cases.items():
        if family == "odd_entry":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, _ = reader.get_data(reader.read(path))
                frames = reader.frames(pydicom.dcmread(path))
        except ValueError as e:  # the only error the reader raises, and it names the file
            assert str(path) in str(e), f"{family}: error does not name the file: {e!r}"
            outcomes[family, "refused"] += 1
            continue
        assert np.all(np.isfinite(data)) and np.all(np.isfinite(frames)), f"{family}: {path} non-finite values"
        assert frames.ndim == 4 and frames.shape[0] >= 1, f"{family}: {path} frames {frames.shape}"
        outcomes[family, "read"] += 1
    assert sum(outcomes.values()) == len(cases) - sum(f == "odd_entry" for f in cases.values()) >= 500
    print("reader outcomes:", dict(sorted(outcomes.items())))


@pytest.fixture(scope="module")
def fuzz_screener(trained_xray_bundle) -> DicomScreener:
    bundle_dir, _, overrides = trained_xray_bundle
    return DicomScreener(bundle_dir, SeriesRules(modalities=None), batch_size=64, device="cpu", overrides=overrides)


def test_fuzz_screen(fuzz_screener: DicomScreener, shared_data: Path, tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    cases = make_cases(inputs, shared_data, per_family=40, seed=SEED + 1)
    summary = screen(fuzz_screener, [inputs], out)  # one batched in-process run over every case
    assert (out / "screening_summary.json").is_file() and summary["complete"]
    statuses = Counter(r["status"] for r in summary["results"])
    assert summary["exit_code"] == 1 and statuses["failed"] > 0 and statuses["screened"] > 0, statuses
    accounted: set[str] = set()
    for r in summary["results"]:
        accounted.update(r["sources"])
        if r["status"] in ("failed", "not screened"):
            assert str(inputs) in r["reason"], f"a failure that names no file: {r['reason'][:300]}"
        for f in r["files"].values():
            assert Path(f).resolve().parent == out.resolve(), f"written outside the output folder: {f}"
    regular = {str(p) for p, fam in cases.items() if p.is_file() and not p.is_symlink()}
    assert regular <= accounted, f"files without a result: {sorted(regular - accounted)[:5]}"
    odd = [p for p, fam in cases.items() if fam == "odd_entry" and not (p.is_file() and not p.is_symlink())]
    assert all(any(str(p) in r["reason"] for r in summary["results"]) for p in odd), "an odd entry went unreported"
    assert _files_outside(tmp_path, [inputs, out]) == [] and _escaped(tmp_path) == []
    print(f"screen: {len(cases)} cases, results {dict(statuses)}")


def _send_all(port: int, paths: list[Path]) -> tuple[list[tuple[Path, int]], int]:
    """C-STOREs files (as they are on disk) in associations of 40; returns (path, status) and the local refusals."""
    acked, local = [], 0
    ae = AE(ae_title="FUZZER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    sop_classes = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.6.1"]
    for uid in sop_classes:
        ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES[:4])
    for start in range(0, len(paths), 40):
        assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
        assert assoc.is_established, "the node stopped accepting associations"
        try:
            for p in paths[start : start + 40]:
                try:
                    status = assoc.send_c_store(p)
                except Exception:  # the client cannot even send it (no matching context, unreadable meta)
                    local += 1
                    continue
                if not assoc.is_established:
                    assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
                    assert assoc.is_established, "the node stopped accepting associations"
                if status and "Status" in status:
                    acked.append((p, int(status.Status)))
        finally:
            if assoc.is_established:
                assoc.release()
    return acked, local


def test_fuzz_node_over_network(fuzz_screener: DicomScreener, shared_data: Path, tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    cases = make_cases(inputs, shared_data, per_family=15, seed=SEED + 2)
    files = [p for p, fam in cases.items() if fam != "odd_entry"]
    with DicomNode(fuzz_screener, ae_title="NODE", port=0, output_dir=out, series_timeout=None) as node:
        statuses, local = _send_all(node.port, files)
        node.wait_idle(timeout=120)
        echo = AE(ae_title="FUZZER")
        echo.add_requested_context(Verification)
        assoc = echo.associate("127.0.0.1", node.port, ae_title="NODE")
        assert assoc.is_established and int(assoc.send_c_echo().Status) == 0  # still serving
        assoc.release()
        records = node.records
    ok = [p for p, s in statuses if s == 0]
    per_family = Counter((cases[p], "acked" if s == 0 else "refused") for p, s in statuses)
    assert len(statuses) + local == len(files) and len(ok) > 0
    assert not any(node.spool.folder.iterdir()), "acknowledged instances left unscreened in the spool"
    for rec in records:
        if rec.status == "failed":
            assert str(node.spool.folder) in rec.reason or "SOP instance" in rec.reason, rec.reason[:300]
        for f in rec.files.values():
            assert Path(f).resolve().parent == out.resolve()
    assert _files_outside(tmp_path, [inputs, out]) == [] and _escaped(tmp_path) == []
    print(
        f"node: {len(files)} files, {len(ok)} acknowledged, {len(statuses) - len(ok)} refused with a status, "
        f"{local} not sendable by the client; {len(records)} series records; {dict(sorted(per_family.items()))}"
    )
