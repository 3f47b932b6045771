# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The project's bundles follow the MONAI Model Zoo layout: ``configs/inference.json`` runs on its own (MONAI's
``create_workflow`` with ``workflow_type="inference"`` checks the inference properties: ``network_def``,
``dataset``, ``evaluator``, ``inferer``, ...; MONAI Label's ``BundleInferTask`` and MONAI Deploy's bundle operator
load this file), ``large_files.yml``, and a ``metadata.json`` with measured metrics and installable packages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigWorkflow, create_workflow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TINY = {
    "robust_xray_classification": {"num_images": 16, "image_size": 32, "batch_size": 8},
    "robust_ct_classification": {"num_images": 16, "image_size": 16, "batch_size": 4},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_create_workflow_inference(name: str, tmp_path: Path) -> None:
    configs = BUNDLES / name / "configs"
    train = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                           workflow_type=None, bundle_root=str(tmp_path), num_epochs=1, **TINY[name])
    train.initialize()
    train.run()
    train.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()

    wf = create_workflow(config_file=str(configs / "inference.json"), workflow_type="inference",
                         meta_file=str(configs / "metadata.json"), bundle_root=str(tmp_path), **TINY[name])
    assert wf.check_properties() in (None, [])  # every required inference property is defined
    assert wf.network_def is not None and wf.inferer is not None
    wf.run()
    wf.finalize()
    with open(tmp_path / "outputs" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(json.loads((tmp_path / "data" / "dataset.json").read_text())["test"]) > 0
    for r in rows:
        assert abs(float(r["p_normal"]) + float(r["p_lesion"]) - 1) < 1e-4
        assert r["predicted_class"] in ("normal", "lesion")


@pytest.mark.parametrize("name", sorted(TINY))
def test_metadata_and_large_files(name: str) -> None:
    bundle = BUNDLES / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    metrics = meta["eval_metrics"]
    assert metrics and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()), metrics
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "n_test") and metrics["n_test"] > 0
    assert "bench/results/bundles.json" in meta["eval_metrics_source"]  # where the numbers were measured
    # only names pip can install (monai_robust is not on PyPI: its version has a key of its own)
    assert "monai_robust" not in meta["required_packages_version"] and meta["monai_robust_version"]
    for version in (meta["monai_version"], meta["pytorch_version"], meta["numpy_version"]):
        assert version.count(".") == 2, version  # the full version that was tested
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["spatial_shape"] == [1, pred["num_channels"]]  # as the zoo writes a classifier's output
    large = yaml.safe_load((bundle / "large_files.yml").read_text())
    assert isinstance(large["large_files"], list)
