# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust evaluate``: the :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` report of a bundle's
*intensity part ∘ network*, with ε in the image's stored units and the stored range as the box, under one of two
suites: ``standard`` (FGSM, PGD-10, AutoAttack and Square alone, as the project's bundles' ``evaluate.json``: the
robust accuracy to quote is AutoAttack's, FGSM/PGD give the ε curves, Square beside the white-box attacks lets the
gradient-masking check run) or ``quick`` (FGSM and PGD only: a first look, which may overstate robustness)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from monai_robust.attacks import FGSM, PGD, AutoAttack, Square
from monai_robust.attacks.base import Attack
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.engines.budget import attack_budget
from monai_robust.engines.evaluator import RobustnessEvaluator
from monai_robust.handlers.attack_progress import AttackProgress
from monai_robust.handlers.report import RobustnessReport

__all__ = ["SUITES", "evaluate_bundle", "suite_attacks", "suite_record", "threat_record"]

SUITES = ("standard", "quick")
"""``standard``: FGSM, PGD, AutoAttack, Square (the default); ``quick``: FGSM and PGD."""


def suite_attacks(
    model: nn.Module,
    bounds: tuple[float, float],
    suite: str = "standard",
    *,
    pgd_steps: int = 10,
    aa_steps: int | None = None,
    aa_queries: int | None = None,
) -> dict[str, Attack]:
    """The attacks of an evaluation suite, named as in the bundles' ``evaluate.json``.

    Args:
        model: the model under attack (stored units in, logits out).
        bounds: the box, in the model's input units.
        suite: ``"standard"`` (FGSM, PGD, AutoAttack, Square) or ``"quick"`` (FGSM, PGD).
        pgd_steps: PGD iterations.
        aa_steps: AutoAttack's iterations of APGD-CE, APGD-T and FAB-T (default the standard 100).
        aa_queries: Square's queries, in AutoAttack and alone (default the standard 5000).

    Returns:
        ``{"FGSM", "PGD-<steps>"[, "AutoAttack", "Square"]}`` attack objects.

    Raises:
        ValueError: On an unknown suite, or AutoAttack settings with the quick suite (which runs no AutoAttack).

    Example::

        >>> sorted(suite_attacks(net, (0.0, 255.0), "standard", aa_steps=10, aa_queries=100))
        ['AutoAttack', 'FGSM', 'PGD-10', 'Square']
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got suite={suite!r}.")
    attacks: dict[str, Attack] = {"FGSM": FGSM(model, bounds=bounds), f"PGD-{pgd_steps}": PGD(model, num_steps=pgd_steps, bounds=bounds)}
    if suite == "quick":
        if aa_steps is not None or aa_queries is not None:
            raise ValueError(f"the quick suite runs no AutoAttack; got aa_steps={aa_steps!r}, aa_queries={aa_queries!r} "
                             "(use the standard suite).")
        return attacks
    aa = AutoAttack(model, bounds=bounds, **{k: v for k, v in (("num_steps", aa_steps), ("num_queries", aa_queries)) if v is not None})
    attacks["AutoAttack"] = aa
    attacks["Square"] = Square(model, bounds=bounds, num_queries=aa.num_queries)
    return attacks


def suite_record(suite: str, attacks: dict[str, Attack]) -> dict[str, Any]:
    """What a report says about its suite: the name, each attack's ``repr`` and budget, and AutoAttack's budget with
    whether it is the standard version's (``autoattack``: ``None`` in the quick suite, which ``note`` says).

    Example::

        >>> suite_record("standard", suite_attacks(net, (0.0, 1.0), aa_steps=10))["autoattack"]["standard"]
        False
    """
    aa = next((a for a in attacks.values() if isinstance(a, AutoAttack)), None)
    budget = None if aa is None else attack_budget(aa)
    if budget is None:
        note = "no AutoAttack (quick suite): FGSM/PGD alone may overstate robustness."
    elif budget["standard"]:
        note = "AutoAttack at the standard version's budget: its robust accuracy is the one to quote."
    else:
        note = f"AutoAttack at a REDUCED budget ({', '.join(budget['reduced'])}): robust accuracy may be overstated."
    return {
        "suite": suite,
        "attacks": {name: repr(a) for name, a in attacks.items()},
        "budgets": {name: attack_budget(a) for name, a in attacks.items()},
        "autoattack": budget,
        "note": note,
    }


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
    suite: str = "standard",
    pgd_steps: int = 10,
    aa_steps: int | None = None,
    aa_queries: int | None = None,
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
        suite: ``"standard"`` or ``"quick"`` (see :func:`suite_attacks`).
        pgd_steps: PGD iterations.
        aa_steps: AutoAttack iterations (default the standard 100).
        aa_queries: Square queries (default the standard 5000).
        seed: seeds the attacks.
        progress: a bar with a time estimate that moves during every attack call, AutoAttack's included
            (:class:`~monai_robust.handlers.attack_progress.AttackProgress`).

    Returns:
        ``{"bundle", "threat_model", "suite", "contract", "statements", "results"}`` (``suite``: :func:`suite_record`;
        ``results``: the evaluator's, whose AutoAttack entry carries its ``budget`` too).

    Raises:
        ValueError: When the model has no bounds (declare or infer the stored range first), or on a bad suite.
    """
    model, bounds = predictor.model, predictor.model.bounds
    if bounds is None:
        raise ValueError("the stored range is unknown: pass --bounds LOW HIGH or declare stored_value_range in metadata.json.")
    out = Path(output_dir)
    attacks = suite_attacks(model, bounds, suite, pgd_steps=pgd_steps, aa_steps=aa_steps, aa_queries=aa_queries)
    guard = predictor.guard if predictor.guard_units == "stored" else None
    evaluator = RobustnessEvaluator(
        predictor.device,
        loader,
        model,
        attacks=attacks,
        eps=list(eps),
        class_names=predictor.class_names,
        detector=None if guard is None else guard.detector,
        val_handlers=[RobustnessReport(out / "report", html=False, console=False)],
        seed=seed,
        progress=False,
    )
    AttackProgress(desc=f"evaluate ({suite} suite)", disable=not progress).attach(evaluator)
    evaluator.run()
    record = {
        "bundle": {"name": predictor.name, "version": predictor.version, "checkpoint": str(predictor.bundle.checkpoint)},
        "threat_model": threat or threat_record(predictor, eps, [f"{e:g} stored units" for e in eps], "declared"),
        "suite": suite_record(suite, attacks),
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
