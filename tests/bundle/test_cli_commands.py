# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust`` end to end on the project's own bundles: ``evaluate`` with the standard suite at a tiny AutoAttack
budget and ζ budgets (2D), on the 3D CT bundle, the quick suite; ``--num-threads`` on every command; ``bundle copy``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from monai_robust.bundle.cli import main
from monai_robust.bundle.data import bundle_loader, read_items
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.bundle.threat import first_images
from monai_robust.data.datalist import load_datalist
from tests.utils import run_bundle

ROOT = Path(__file__).resolve().parents[2]
CT_BUNDLE = ROOT / "bundles" / "robust_ct_classification"
TINY_CT = {"num_images": 20, "image_size": 16, "batch_size": 4}
TINY_AA = ["--aa-steps", "2", "--aa-queries", "5"]


def _flags(overrides: dict) -> list[str]:
    return [f"--{k}={json.dumps(v)}" for k, v in overrides.items()]


def _run(capsys, *args: str) -> tuple[dict, str]:
    capsys.readouterr()
    rc = main([*args, "--device", "cpu", "--num-threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    # the JSON result is the last thing printed; log lines before it come from the logging.conf of a bundle run in
    # this process (run_bundle), which sends records to stdout
    return json.loads(out[re.search(r"^\{", out, re.M).start():]), err


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_standard_suite_with_zeta(trained_xray_bundle, tmp_path, capsys, keep_threads):
    """The default suite (FGSM, PGD-10, AutoAttack, Square) at a tiny AutoAttack budget, ε given as ζ: the budget is
    recorded as reduced in the CLI output, evaluation.json and the report's headline; progress shows AutoAttack."""
    bundle_dir, root, overrides = trained_xray_bundle
    datalist = root / "data" / "dataset.json"
    args = ["--bundle", str(bundle_dir), str(datalist), "--split", "test", *_flags({**overrides, "bundle_root": str(root)})]
    out, err = _run(capsys, "evaluate", *args, "--zeta", "0.01", "0.02", *TINY_AA, "--output", str(tmp_path))

    # zeta: eps = zeta * mean ||x||_inf over the first images, in stored units
    p = BundlePredictor(bundle_dir, {**overrides, "bundle_root": str(root)}, device="cpu", guard=False)
    x = first_images(bundle_loader(read_items(str(datalist), p.class_names, "test"), p.split.loading, 8))
    mean_inf = float(x.flatten(1).abs().amax(1).mean())
    tm = out["threat_model"]
    assert tm["eps"] == pytest.approx([0.01 * mean_inf, 0.02 * mean_inf], rel=1e-4)
    assert tm["eps_stated_as"] == ["zeta=0.01 (Linf)", "zeta=0.02 (Linf)"]

    suite = out["suite"]
    assert suite["suite"] == "standard" and list(suite["attacks"]) == ["FGSM", "PGD-10", "AutoAttack", "Square"]
    aa = suite["autoattack"]
    assert (aa["num_steps"], aa["num_queries"], aa["standard"]) == (2, 5, False)
    assert aa["reduced"] == ["num_steps 2 < 100", "num_queries 5 < 5000"] and "REDUCED" in suite["note"]
    assert suite["budgets"]["Square"]["num_queries"] == 5
    head = out["summary"]["headline"]
    assert "standard suite (AutoAttack)" in head[0] and "AutoAttack budget: 2 iterations" in head[1] and "REDUCED" in head[1]
    rows = out["summary"]["attacks"]
    assert set(rows) == {"FGSM", "PGD-10", "AutoAttack", "Square"} and all(len(r) == 2 for r in rows.values())
    clean = out["summary"]["clean"]["accuracy"]
    assert all(r["accuracy"] <= clean + 1e-9 for r in rows["AutoAttack"])

    record = json.loads((tmp_path / "evaluation.json").read_text())
    assert record["suite"]["autoattack"]["standard"] is False
    assert record["results"]["attacks"]["AutoAttack"]["budget"]["num_queries"] == 5
    report = json.loads((tmp_path / "report" / "robustness.json").read_text())
    assert report["attacks"]["AutoAttack"]["budget"]["reduced"] == aa["reduced"]
    assert "evaluate (standard suite)" in err and "passes" in err  # the progress bar (stderr), not --quiet


def test_quick_suite_refuses_autoattack_settings(trained_xray_bundle, tmp_path, capsys, keep_threads):
    bundle_dir, root, overrides = trained_xray_bundle
    args = ["evaluate", "--bundle", str(bundle_dir), str(root / "data" / "dataset.json"), "--split", "test",
            *_flags({**overrides, "bundle_root": str(root)}), "--eps", "40", "--output", str(tmp_path), "--quiet"]
    out, _ = _run(capsys, *args, "--suite", "quick")
    assert list(out["suite"]["attacks"]) == ["FGSM", "PGD-10"] and out["suite"]["autoattack"] is None
    assert "not run" in out["summary"]["headline"][0]
    assert main([*args, "--suite", "quick", "--aa-steps", "3", "--device", "cpu"]) == 1
    assert "quick suite runs no AutoAttack" in capsys.readouterr().err
    assert main([*args, "--aa-steps", "0"]) == 2 and "positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_3d_bundle(tmp_path, capsys, keep_threads):
    """The 3D CT bundle (ResNet10 on 16^3 phantoms, one epoch) through the CLI as it is: ε in HU, the box its
    metadata's stored range (12-bit CT in HU, not the display window), the standard suite at a tiny budget."""
    root = tmp_path / "ct"
    run_bundle(CT_BUNDLE, ["train.json"], root, num_epochs=1, **TINY_CT)
    datalist = root / "data" / "dataset.json"
    out, _ = _run(capsys, "evaluate", "--bundle", str(CT_BUNDLE), str(datalist), "--split", "test",
                  *_flags({**TINY_CT, "bundle_root": str(root)}), "--eps", "4", "16", *TINY_AA, "--quiet")
    tm = out["threat_model"]
    assert tm["eps"] == [4.0, 16.0] and tm["eps_stated_as"] == ["4 stored units", "16 stored units"]
    assert tm["bounds"] == [-1024.0, 3071.0] and tm["bounds_source"].startswith("declared")
    assert out["summary"]["clean"]["n"] == len(load_datalist(datalist, "test"))
    assert out["suite"]["autoattack"]["num_steps"] == 2
    assert {r["status"] for rows in out["summary"]["attacks"].values() for r in rows} == {"ok"}
    report = json.loads((root / "robustness" / "evaluate" / "report" / "robustness.json").read_text())
    assert report["meta"]["n"] == out["summary"]["clean"]["n"]
    assert BundlePredictor(CT_BUNDLE, {**TINY_CT, "bundle_root": str(root)}, device="cpu", guard=False).bundle.spatial_dims == 3


@pytest.mark.parametrize("command", ["evaluate", "harden", "guard", "predict", "screen", "serve"])
def test_num_threads_on_every_command(command, tmp_path, capsys, monkeypatch, keep_threads):
    """--num-threads N sets torch's threads before the command runs (here it then fails on a missing bundle); the
    default is default_num_threads() (the user's OMP_NUM_THREADS, else the cores left by the load)."""
    missing = str(tmp_path / "no_bundle")
    if command in ("screen", "serve"):
        args = [command, "--bundle", missing, "--input", str(tmp_path), "--output", str(tmp_path / "o")]
        args = args if command == "screen" else args[:3] + ["--port", "0", "--output", str(tmp_path / "o")]
    else:
        args = [command, "--bundle", missing, str(tmp_path / "list.json"), *([] if command == "predict" else ["--eps", "1"])]
    torch.set_num_threads(1)
    assert main([*args, "--num-threads", "2"]) != 0
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(args) != 0
    assert torch.get_num_threads() == 3
    capsys.readouterr()
    assert main([*args, "--num-threads", "-1"]) == 2 and "num_threads" in capsys.readouterr().err


def test_bundle_copy_and_list(tmp_path, capsys):
    assert main(["bundle", "list"]) == 0 and "robust_ct_classification" in capsys.readouterr().out
    dest = tmp_path / "my_bundle"
    assert main(["bundle", "copy", "robust_xray_classification", str(dest)]) == 0
    assert (dest / "configs" / "inference.json").is_file() and "monai.bundle run" in capsys.readouterr().out
    assert main(["bundle", "copy", "robust_xray_classification", str(dest)]) == 2  # never over an existing bundle
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["bundle", "copy", "robust_xray_classification", str(tmp_path / "x"), "--num_epochs", "2"]) == 2
