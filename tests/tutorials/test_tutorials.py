# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Each tutorial runs end to end with ``--tiny`` as a user would run it (a subprocess on the real PneumoniaMNIST /
AdrenalMNIST3D files), and the JSON it writes has the expected keys and sane values.

The tiny settings are a smoke test: the models barely train, so the checks are properties (rates in [0, 1], the
budget holds, the worst case is below each attack, files exist), not accuracies.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"


def _run(script: str, *args: Any) -> subprocess.CompletedProcess:
    """Runs ``tutorials/<script> --tiny args`` on one thread (``MONAI_ROBUST_TEST_THREADS`` when set)."""
    threads = os.environ.get("MONAI_ROBUST_TEST_THREADS", "1")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "MONAI_ROBUST_TEST_THREADS": threads}
    cmd = [sys.executable, str(TUTORIALS / script), "--tiny", *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _rate(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_harden(shared_data: Path, tmp_path: Path) -> None:
    _run("harden_pneumoniamnist.py", "--npz", shared_data / "pneumoniamnist.npz", "--output-dir", tmp_path)
    res = json.loads((tmp_path / "harden.json").read_text())
    assert set(res) >= {"config", "block_selection_on_val", "rows", "goal", "total_seconds"}
    assert res["config"]["tiny"] is True and res["config"]["n_test"] == 48
    assert res["block_selection_on_val"]["chosen"] in res["block_selection_on_val"]["scores"]
    assert len(res["rows"]) == 4 and "standard" in res["rows"]
    for row in res["rows"].values():
        assert _rate(row["clean_accuracy"]) and _rate(row["clean_auc"])
        assert set(row["robust"]) == {"0.5/255", "1/255", "2/255", "4/255"}
        for entry in row["robust"].values():
            assert all(_rate(v) for v in entry.values())
            # the worst case is correct under every attack: never above any attack nor the clean accuracy
            assert entry["worst_case"] <= min(entry.values()) + 1e-6
            assert entry["worst_case"] <= row["clean_accuracy"] + 1e-6
    assert (tmp_path / "harden.md").read_text().startswith("# Hardening on PneumoniaMNIST")


def test_uap(shared_data: Path, tmp_path: Path) -> None:
    _run("uap_pneumoniamnist.py", "--npz", shared_data / "pneumoniamnist.npz", "--npz3d",
         shared_data / "adrenalmnist3d.npz", "--output-dir", tmp_path)
    res = json.loads((tmp_path / "universal_evidence.json").read_text())
    assert res["subset"]["tiny"] is True
    for name in ("pneumoniamnist", "adrenalmnist3d"):
        part = res[name]
        assert _rate(part["model"]["test_acc"])
        fits = [*part["nontargeted_zeta_4pct_l2"].values(), *part["zeta_sweep_sgd_nontargeted"].values()]
        fits += [f for by_target in part["targeted_zeta_4pct_l2"].values() for f in by_target.values()]
        for fit in fits:
            assert 0.0 <= fit["delta_l2"] <= fit["eps"] * (1 + 1e-4)  # the L2 budget holds
            assert _rate(fit["test_fooling_rate"])
            assert all(_rate(v) for v in fit["controls_same_l2_norm"].values())  # the random controls
            if fit["target"] is not None:
                assert _rate(fit["test_targeted_success_rate"])
    nontargeted = set(res["pneumoniamnist"]["nontargeted_zeta_4pct_l2"])
    assert nontargeted == {"SGDUAP", "IterativeUAP_fgsm", "IterativeUAP_deepfool"}
    assert set(res["pneumoniamnist"]["natural_images_zeta_4pct_l2"]) >= {"nontargeted", "targeted_0", "targeted_1"}
    retraining = res["pneumoniamnist"]["adversarial_retraining"]
    assert _rate(retraining["fooling_rate_before"]) and _rate(retraining["fooling_rate_after"])


def test_detectors(shared_data: Path, tmp_path: Path) -> None:
    _run("detectors_pneumoniamnist.py", "--npz", shared_data / "pneumoniamnist.npz", "--npz3d",
         shared_data / "adrenalmnist3d.npz", "--output-dir", tmp_path)
    res = json.loads((tmp_path / "detectors.json").read_text())
    assert set(res) >= {"protocol", "per_attack", "cross_attack", "guard_fpr_0.05", "adaptive_eps_4/255",
                        "3d_adrenalmnist3d", "runtime_s"}
    assert res["protocol"]["subset"]["tiny"] is True
    assert {"FGSM@4/255", "BIM@4/255", "PGD@4/255"} <= set(res["per_attack"])
    for row in [*res["per_attack"].values(), *res["3d_adrenalmnist3d"]["per_attack"].values()]:
        assert _rate(row["success_rate"])
        for auc in row["auc"].values():  # a float, None (too few adversarial images) or why it was not fitted
            assert auc is None or _rate(auc) or auc.startswith("not fitted")
    fitted = [d for d, auc in res["per_attack"]["PGD@4/255"]["auc"].items() if isinstance(auc, float)]
    assert fitted, res["per_attack"]["PGD@4/255"]
    for det in fitted:  # every detector fitted on PGD 4/255 gets a guard and the adaptive attacks
        guard = res["guard_fpr_0.05"][det]
        assert _rate(guard["test_clean_fpr"]) and all(_rate(v) for v in guard["detection_rate"].values())
        for row in res["adaptive_eps_4/255"]["rows"][det].values():
            assert row["fooled_and_passed_guard"] <= row["classifier_fooled"] + 1e-6


def test_bundle_on_your_dicom(shared_data: Path, tmp_path: Path) -> None:
    import pydicom

    _run("bundle_on_your_dicom.py", "--npz", shared_data / "pneumoniamnist.npz", "--output-dir", tmp_path)
    res = json.loads((tmp_path / "bundle_on_your_dicom.json").read_text())
    # the demo folder: class sub-folders of DICOM files
    assert res["demo"] is True and res["classes"] == ["normal", "pneumonia"]
    assert res["class_counts"] == {"normal": 20, "pneumonia": 20}
    files = sorted((tmp_path / "dicom" / "pneumonia").glob("*.dcm"))
    assert len(files) == 20
    ds = pydicom.dcmread(files[0])
    assert (ds.Modality, ds.Rows, ds.Columns, ds.BitsStored) == ("CR", 28, 28, 8)
    assert res["intensity_window"] == [0.0, 255.0]  # the 8-bit stored range
    # the datalist, and what the bundle wrote: checkpoint, guard, report, predictions
    datalist = json.loads(Path(res["datalist"]).read_text())
    assert {k: len(datalist[k]) for k in ("training", "validation", "test")} == res["splits"]
    for key in ("checkpoint", "guard", "report_json", "report_html", "predictions_csv"):
        assert Path(res[key]).is_file(), key
    assert math.isfinite(res["clean_accuracy"]) and 0.0 <= res["clean_accuracy"] <= 1.0
    assert res["num_predictions"] == res["splits"]["test"]
    assert 0 <= res["num_flagged_by_guard"] <= res["num_predictions"]
    assert {"p_normal", "p_pneumonia", "predicted_class", "adversarial_suspected"} <= set(res["prediction_columns"])
