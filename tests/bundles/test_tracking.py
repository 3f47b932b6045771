# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Experiment tracking of every stage through MONAI's ``--tracking`` mechanism: the X-ray bundle's chain (train ->
harden -> guard -> evaluate, tiny) run by ``monai.bundle.run`` (what ``python -m monai.bundle run ... --tracking
configs/tracking.json``, the README's command, calls) with a local SQLite MLflow store in a temporary folder; then the
MLflow runs (one per stage) and the TensorBoard curves over ε are read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from monai.bundle import run

from tests.bundles.test_bundles import BUNDLES, TINY

XRAY = BUNDLES / "robust_xray_classification" / "configs"
EPS = [0.05, 0.1, 0.3]  # budgets at which the attacks change predictions of the 1-epoch model (a guard AUC exists)


def _require_mlflow() -> None:
    try:
        import alembic  # noqa: F401
        import mlflow  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as e:
        reason = f"MLflow tracking needs the `tracking` extra (pip install -e '.[tracking]'): {e}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)


def test_every_stage_reaches_mlflow_and_tensorboard(tmp_path: Path) -> None:
    _require_mlflow()
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run(
        config_file=[str(XRAY / c) for c in ("train.json", "harden.json", "guard.json", "evaluate.json")],
        meta_file=str(XRAY / "metadata.json"),
        logging_file=str(XRAY / "logging.conf"),
        bundle_root=str(tmp_path),
        tracking=str(XRAY / "tracking.json"),
        tracking_uri=uri,
        experiment_name="tracking_test",
        num_epochs=1,
        harden_epochs=1,
        eval_eps=EPS,
        **TINY["robust_xray_classification"],
    )
    report = json.loads((tmp_path / "outputs" / "report" / "robustness.json").read_text())
    eps = sorted(r["eps"] for r in report["attacks"]["PGD-10"]["results"] if r["status"] == "ok")
    assert eps == pytest.approx(EPS)

    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "tracking_test"]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"train", "harden", "evaluate"} <= set(runs), sorted(runs)
    assert "train_loss" in runs["train"].data.metrics and "harden_loss" in runs["harden"].data.metrics
    assert "val_accuracy" in runs["train"].data.metrics  # the validator logs into the active training run

    evaluate = runs["evaluate"]
    run_id = evaluate.info.run_id
    # robust accuracy of each attack as a curve over ε: step = ε index, ``<attack>/eps`` gives ε per step
    for attack in ("FGSM", "PGD-10"):
        accuracy = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"{attack}/accuracy"))
        steps = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"{attack}/eps"))
        assert [s for s, _ in accuracy] == [0, 1, 2] and [v for _, v in steps] == pytest.approx(eps)
        want = sorted((r["eps"], r["accuracy"]) for r in report["attacks"][attack]["results"] if r["status"] == "ok")
        assert [v for _, v in accuracy] == pytest.approx([a for _, a in want])
        assert json.loads(evaluate.data.params[f"eps/{attack}"]) == pytest.approx(eps)
        # the guard's AUC with the sizes behind it
        n_adv = [m.value for m in sorted(client.get_metric_history(run_id, f"{attack}/detector_n_adversarial"), key=lambda m: m.step)]
        want_n = [r["detector"]["n_adversarial"] for r in sorted(report["attacks"][attack]["results"], key=lambda r: r["eps"])]
        assert n_adv == want_n and f"{attack}/detector_n_clean" in evaluate.data.metrics
    auc = client.get_metric_history(run_id, "PGD-10/detector_auc")  # logged where adversarial images exist
    assert auc and all(0.0 <= m.value <= 1.0 for m in auc)
    assert evaluate.data.metrics["clean/accuracy"] == pytest.approx(report["clean"]["accuracy"])
    verdicts = {c["name"]: c["status"] for c in report["validity"]}
    assert verdicts and {k: evaluate.data.params[f"validity/{k}"] for k in verdicts} == verdicts
    assert evaluate.data.metrics["validity/failed"] == sum(v == "fail" for v in verdicts.values())
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "robustness.json" in artifacts

    # TensorBoard: one folder per stage; the evaluation's curves over ε (step = ε index)
    tb = tmp_path / "outputs" / "tensorboard"
    assert {p.name for p in tb.iterdir()} == {"train", "validate", "harden", "evaluate"}
    events = EventAccumulator(str(tb / "evaluate"))
    events.Reload()
    curve = events.Scalars("robustness/curves/PGD-10/accuracy")
    assert [e.step for e in curve] == [0, 1, 2]
    assert [e.value for e in events.Scalars("robustness/curves/PGD-10/eps")] == pytest.approx(eps, rel=1e-6)
