# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust evaluate``: the :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` report of a bundle's
*intensity part ∘ network* under FGSM and PGD, with ε in the image's stored units and the stored range as the box."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from monai_robust.attacks import FGSM, PGD
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.engines.evaluator import RobustnessEvaluator
from monai_robust.handlers.report import RobustnessReport

__all__ = ["evaluate_bundle", "threat_record"]


def threat_record(predictor: BundlePredictor, eps: Sequence[float], described: Sequence[str], bounds_how: str) -> dict[str, Any]:
    """What a report says about its threat model: units, box, ε, how the intensity part is differentiated."""
    return {
        "units": "stored values (after the bundle's loading/geometry part, before its intensity part)",
        "bounds": list(predictor.model.bounds or ()),
        "bounds_source": bounds_how,
        "eps": list(eps),
        "eps_stated_as": list(described),
        "lp": "inf",
        "intensity_part": predictor.split.describe(),
        "gradient_approximations": predictor.split.approximations,
    }


def evaluate_bundle(
    predictor: BundlePredictor,
    loader: Iterable[Any],
    eps: Sequence[float],
    output_dir: str | Path,
    *,
    threat: dict[str, Any] | None = None,
    pgd_steps: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the robustness evaluation of a bundle in stored units and writes ``report/`` and ``evaluation.json``.

    Args:
        predictor: the bundle (its :attr:`~BundlePredictor.model` has the stored range as ``bounds``).
        loader: labelled batches in stored units (``bundle_loader``).
        eps: L∞ budgets in stored units.
        output_dir: where the report and ``evaluation.json`` go.
        threat: the threat-model record for the JSON (see :func:`threat_record`).
        pgd_steps: PGD iterations.
        seed: seeds the attacks.
        progress: tqdm bar over the batches, with a time estimate.

    Returns:
        ``{"bundle", "threat_model", "contract", "statements", "results"}`` (``results``: the evaluator's).

    Raises:
        ValueError: When the model has no bounds (declare or infer the stored range first).
    """
    model, bounds = predictor.model, predictor.model.bounds
    if bounds is None:
        raise ValueError("the stored range is unknown: pass --bounds LOW HIGH or declare stored_value_range in metadata.json.")
    out = Path(output_dir)
    guard = predictor.guard if predictor.guard_units == "stored" else None
    evaluator = RobustnessEvaluator(
        predictor.device,
        loader,
        model,
        attacks={"FGSM": FGSM(model, bounds=bounds), f"PGD-{pgd_steps}": PGD(model, num_steps=pgd_steps, bounds=bounds)},
        eps=list(eps),
        class_names=predictor.class_names,
        detector=None if guard is None else guard.detector,
        val_handlers=[RobustnessReport(out / "report", html=False, console=False)],
        seed=seed,
        progress=progress,
    )
    evaluator.run()
    record = {
        "bundle": {"name": predictor.name, "version": predictor.version, "checkpoint": str(predictor.bundle.checkpoint)},
        "threat_model": threat or threat_record(predictor, eps, [f"{e:g} stored units" for e in eps], "declared"),
        "contract": predictor.contract.to_json(),
        "statements": predictor.statements,
        "results": evaluator.results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(record, indent=2, default=_jsonable))
    return record


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
