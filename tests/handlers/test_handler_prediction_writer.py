# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``GuardedPredictionWriter`` on an Ignite engine whose outputs look like a decollated SupervisedEvaluator's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from monai_robust.handlers import GuardedPredictionWriter


class _Guard:
    def verdicts(self, x: torch.Tensor) -> list[dict]:
        return [{"adversarial_suspected": bool(v > 0.5), "score": float(v), "threshold": 0.5} for v in x.mean((1, 2, 3))]


def _engine(preds: list[torch.Tensor]) -> Engine:
    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        return [{"image": item["image"], "pred": p} for item, p in zip(batch, preds)]

    return Engine(step)


def _batch(values: list[float]) -> list[dict]:
    return [{"image": MetaTensor(torch.full((1, 4, 4), v), meta={"filename_or_obj": f"img{i}.dcm"})}
            for i, v in enumerate(values)]


@pytest.mark.parametrize("guard", [_Guard(), None])
def test_rows_and_files(tmp_path: Path, guard: _Guard | None) -> None:
    preds = [torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])]
    engine = _engine(preds)
    GuardedPredictionWriter(tmp_path, ["normal", "lesion"], guard=guard).attach(engine)
    engine.run([_batch([0.2, 0.7])], max_epochs=2)  # a second epoch starts afresh
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["filename"] for r in rows] == ["img0.dcm", "img1.dcm"]
    assert [r["predicted_class"] for r in rows] == ["normal", "lesion"]
    assert float(rows[1]["p_lesion"]) == pytest.approx(0.8)
    saved = json.loads((tmp_path / "predictions.json").read_text())
    if guard is None:
        assert rows[0]["adversarial_suspected"] == "" and saved[0]["guard"] is None
    else:
        assert [r["adversarial_suspected"] for r in rows] == ["False", "True"]
        assert saved[1]["guard"] == {"adversarial_suspected": True, "score": pytest.approx(0.7), "threshold": 0.5}


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class_names"):
        GuardedPredictionWriter(tmp_path, [])
    engine = _engine([torch.tensor([0.2, 0.3, 0.5])])
    GuardedPredictionWriter(tmp_path, ["normal", "lesion"]).attach(engine)
    with pytest.raises(ValueError, match="3 values for 2 class names"):
        engine.run([_batch([0.1])])
