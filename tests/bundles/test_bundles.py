# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Each bundle's chained workflow (train -> harden -> evaluate) run through MONAI's ConfigWorkflow on tiny
embedded phantom data, as `python -m monai.bundle run` would run it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# guard_fpr: the tiny validation splits hold 3-5 images (a 5 % FPR needs 20); guard_eps: a 1-epoch model is barely
# input-sensitive, so the guard's fitting attack needs a large budget to change any prediction
TINY = {
    "robust_xray_classification": {"num_images": 24, "image_size": 32, "batch_size": 8, "guard_fpr": 0.25,
                                   "guard_eps": 0.25, "aa_steps": 2, "aa_queries": 5},
    "robust_ct_classification": {"num_images": 20, "image_size": 16, "batch_size": 4, "guard_fpr": 0.4,
                                 "guard_eps": 0.25, "aa_steps": 2, "aa_queries": 5},
}


def _workflow(name: str, configs: list[str], root: Path, **override) -> ConfigWorkflow:
    files = [str(BUNDLES / name / "configs" / c) for c in configs]
    return ConfigWorkflow(
        config_file=files,
        meta_file=str(BUNDLES / name / "configs" / "metadata.json"),
        logging_file=str(BUNDLES / name / "configs" / "logging.conf"),
        workflow_type=None,
        bundle_root=str(root),
        num_epochs=1,
        harden_epochs=1,
        **TINY[name],
        **override,
    )


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_harden_evaluate(name: str, tmp_path: Path) -> None:
    wf = _workflow(name, ["train.json", "harden.json", "guard.json", "evaluate.json"], tmp_path)
    wf.initialize()
    wf.run()
    wf.finalize()
    assert (tmp_path / "data" / "dataset.json").is_file()
    assert (tmp_path / "models" / "model_hardened.pt").is_file()
    assert (tmp_path / "models" / "guard.pt").is_file()
    report = json.loads((tmp_path / "outputs" / "report" / "robustness.json").read_text())
    assert 0.0 <= report["clean"]["accuracy"] <= 1.0
    # Square beside AutoAttack: the masking check compares it with the white-box attacks (never skipped)
    assert report["attacks"]["Square"]["black_box"] and report["attacks"]["AutoAttack"]["standard_suite"]
    budget = report["attacks"]["AutoAttack"]["budget"]  # the tiny aa_steps/aa_queries: said to be reduced
    assert (budget["num_steps"], budget["num_queries"], budget["standard"]) == (2, 5, False)
    masking = next(c for c in report["validity"] if c["name"] == "gradient_masking")
    assert masking["status"] in ("pass", "fail") and masking["details"]["pairs"] == 3
    assert report["detector"]["detector"] == "DeepFeatureDetector" and report["detector"]["error"] is None
    guard = report["detector"]["guard"]  # the guard's FPR measured on the clean test images, with its interval
    assert guard["calibration_size"] > 0 and guard["held_out"]["n"] == report["clean"]["n"]
    assert guard["held_out"]["interval"][0] <= guard["held_out"]["fpr"] <= guard["held_out"]["interval"][1]
    assert (tmp_path / "outputs" / "report" / "index.html").is_file()
    # one TensorBoard run folder per stage
    tb = tmp_path / "outputs" / "tensorboard"
    assert {p.name for p in tb.iterdir()} == {"train", "validate", "harden", "evaluate"}
    assert all(list((tb / stage).glob("events.out.tfevents.*")) for stage in ("train", "validate", "harden", "evaluate"))

    # the hardened checkpoint exports to TorchScript and verifies against metadata.json, as MONAI's CLI does it
    configs = [str(BUNDLES / name / "configs" / c) for c in ("train.json", "harden.json")]
    common = {"meta_file": str(BUNDLES / name / "configs" / "metadata.json"), "config_file": configs,
              "bundle_root": str(tmp_path), **{k: v for k, v in TINY[name].items() if k != "batch_size"}}
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(tmp_path / "models" / "model_hardened.pt"),
                key_in_ckpt="model", **common)
    scripted = torch.jit.load(str(ts))
    size = TINY[name]["image_size"]
    x = torch.rand(2, 1, *([size] * (3 if "ct" in name else 2)))
    assert scripted(x).shape == (2, 2)

    # inference on the test split with the hardened checkpoint and the fitted guard: one row per image with the
    # class probabilities and the guard's verdict
    wf = _workflow(name, ["inference.json", "harden.json"], tmp_path)
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(tmp_path / "outputs" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_test = len(json.loads((tmp_path / "data" / "dataset.json").read_text())["test"])
    assert len(rows) == n_test
    for r in rows:
        assert abs(float(r["p_normal"]) + float(r["p_lesion"]) - 1) < 1e-4
        assert r["predicted_class"] in ("normal", "lesion") and Path(r["filename"]).is_file()
        assert r["adversarial_suspected"] in ("True", "False")
        assert (float(r["guard_score"]) > float(r["guard_threshold"])) == (r["adversarial_suspected"] == "True")
    saved = json.loads((tmp_path / "outputs" / "predictions.json").read_text())
    assert [s["guard"]["score"] for s in saved] == pytest.approx([float(r["guard_score"]) for r in rows])


def test_config_typo_is_named(tmp_path: Path) -> None:
    wf = _workflow("robust_xray_classification", ["train.json"], tmp_path, **{"train#trainer#netwrk": "@network"})
    wf.initialize()
    with pytest.raises(Exception, match="netwrk"):
        wf.run()
    wf = _workflow("robust_xray_classification", ["train.json"], tmp_path, stages="$[@no_such_key]")
    wf.initialize()
    with pytest.raises(Exception, match="no_such_key"):
        wf.run()


@pytest.mark.parametrize("name", sorted(TINY))
def test_verify_net_in_out(name: str, tmp_path: Path) -> None:
    """``python -m monai.bundle verify_net_in_out`` against ``metadata.json``'s ``network_data_format``."""
    from monai.bundle import verify_net_in_out

    configs = BUNDLES / name / "configs"
    verify_net_in_out("network_def", meta_file=str(configs / "metadata.json"), config_file=str(configs / "train.json"),
                      bundle_root=str(tmp_path), n=2, num_images=TINY[name]["num_images"])
