# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Robustness results as curves over ε, the common input of the experiment trackers (TensorBoard, MLflow): per attack
the ε budgets in ascending order (an unbounded attack last) with the metrics at each, so that robust accuracy, attack
success and the guard's AUC can be plotted against ε with the ε index as the step."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["CURVE_METRICS", "robustness_curves", "tracking_name"]

CURVE_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def tracking_name(text: str) -> str:
    """A metric / parameter name every tracker accepts (MLflow: letters, digits, ``_ - . / : space``): other characters
    become ``_``.

    Example::

        >>> tracking_name("PGD-10 (L∞)@eps")
        'PGD-10 _L___eps'
    """
    return _UNSAFE.sub("_", str(text))


def robustness_curves(results: dict[str, Any]) -> dict[str, list[tuple[float | None, dict[str, float]]]]:
    """Per attack, the points ``(eps, {metric: value})`` of the evaluator's results in ascending ε (``None``, an
    unbounded attack, last); only successful runs (``status == "ok"``) and finite values. ``detector_auc`` is the
    guard's AUC of clean against adversarial images at that ε (when defined), with ``detector_n_clean`` /
    ``detector_n_adversarial`` (the sizes behind it, also when no adversarial image exists and so no AUC).

    Args:
        results: ``RobustnessEvaluator.results`` / ``engine.state.robustness``
            (``{"attacks": {name: {"results": [{"eps", "status", metric: value, "detector": {"auc"}}]}}}``).

    Returns:
        ``{attack: [(eps, metrics), ...]}``; an attack without a successful run is left out.

    Example::

        >>> curves = robustness_curves(evaluator.results)
        >>> [(eps, m["accuracy"]) for eps, m in curves["PGD-10"]]
        [(0.0039, 0.81), (0.0078, 0.62), (0.0157, 0.30)]
    """
    curves: dict[str, list[tuple[float | None, dict[str, float]]]] = {}
    for name, attack in (results.get("attacks") or {}).items():
        points = []
        for r in attack.get("results", []):
            if r.get("status") != "ok":
                continue
            metrics = {m: float(r[m]) for m in CURVE_METRICS if _finite(r.get(m))}
            detector = r.get("detector") or {}
            if _finite(detector.get("auc")):
                metrics["detector_auc"] = float(detector["auc"])
            for n in ("n_clean", "n_adversarial"):  # the sizes behind the AUC (0 adversarial: no AUC)
                if _finite(detector.get(n)):
                    metrics[f"detector_{n}"] = float(detector[n])
            eps = float(r["eps"]) if _finite(r.get("eps")) else None  # unbounded (minimisation) attacks: None
            points.append((eps, metrics))
        if points:
            curves[str(name)] = sorted(points, key=lambda p: (p[0] is None, p[0] or 0.0))
    return curves
