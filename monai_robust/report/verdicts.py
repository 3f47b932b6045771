# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The headline of a robustness report: the standard suite's worst case, the verdicts a reader must see before any
number (``gradient_masking``, ``attack_convergence``), and the per-step success of the minimisation attacks.

The standard suite is AutoAttack (Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690): its robust accuracy
is the one to quote; FGSM and PGD stay in the report for the ε curves. Pure functions of the evaluator's results
(or the JSON read back), used by the HTML page and the text table.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "KEY_CHECKS",
    "STANDARD_SUITE",
    "budget_lines",
    "budget_verdicts",
    "headline_lines",
    "key_verdicts",
    "standard_suite_rows",
    "success_by_step_rows",
]

STANDARD_SUITE = "AutoAttack"
"""The default "standard" suite of the report: the attacks whose results carry ``standard_suite: true``."""

KEY_CHECKS = ("gradient_masking", "attack_convergence")
"""The validity checks shown above every number."""


def standard_suite_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of the standard suite (attacks with ``standard_suite``), one row per ε.

    Args:
        results: the evaluator's results.

    Returns:
        Rows ``{"attack", "lp", "eps", "n", "accuracy"}`` of the successful (attack, ε) results; empty when no
        standard-suite attack ran (the report then says that PGD/FGSM alone may overstate robustness).

    Example::

        >>> standard_suite_rows(results)[0]["accuracy"]
    """
    rows = []
    for name, a in results.get("attacks", {}).items():
        if not a.get("standard_suite"):
            continue
        for r in a.get("results", []):
            if r.get("status") == "ok":
                rows.append({"attack": name, "lp": a.get("lp"), "eps": r.get("eps"), "n": r.get("n"),
                             "accuracy": r.get("accuracy")})
    return rows


def budget_verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The budget each standard-suite attack ran with (the ``budget`` of its results entry): iterations, target
    classes and Square queries, and whether that is the standard version's budget or a reduced one (a reduced budget
    may overstate robustness).

    Args:
        results: the evaluator's results.

    Returns:
        One ``{"attack", "standard" (bool, ``None`` when not recorded), "text"}`` per standard-suite attack.

    Example::

        >>> budget_verdicts(results)[0]["text"]
        'AutoAttack budget: 10 iterations, 9 target classes, 100 Square queries, ...: REDUCED (standard 100 iterations, ...'
    """
    out = []
    for name, a in results.get("attacks", {}).items():
        if not a.get("standard_suite"):
            continue
        b = a.get("budget")
        if not b or "standard" not in b:
            out.append({"attack": name, "standard": None, "text": f"{name} budget not recorded."})
        elif b["standard"]:
            out.append({"attack": name, "standard": True,
                        "text": f"{name} budget: {_budget_text(b)}: the standard version's (Croce & Hein 2020)."})
        else:
            out.append({"attack": name, "standard": False, "text": (
                f"{name} budget: {_budget_text(b)}: REDUCED (standard {_budget_text(b['standard_budget'], attacks=False)}; "
                f"{', '.join(b['reduced'])}): robust accuracy may be overstated.")})
    return out


def budget_lines(results: dict[str, Any]) -> list[str]:
    """The texts of :func:`budget_verdicts`, one line per standard-suite attack."""
    return [v["text"] for v in budget_verdicts(results)]


def _budget_text(b: dict[str, Any], attacks: bool = True) -> str:
    parts = [f"{b['num_steps']} iterations"] if "num_steps" in b else []
    if "num_target_classes" in b:
        parts.append(f"{b['num_target_classes']} target classes")
    if "num_queries" in b:
        parts.append(f"{b['num_queries']} Square queries")
    if attacks and "attacks" in b:
        parts.append("/".join(b["attacks"]))
    return ", ".join(parts)


def key_verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts of :data:`KEY_CHECKS` in the results' validity section, in that order (missing ones skipped).

    Example::

        >>> [c["name"] for c in key_verdicts(results)]
        ['gradient_masking', 'attack_convergence']
    """
    checks = {c.get("name"): c for c in results.get("validity", [])}
    return [checks[k] for k in KEY_CHECKS if k in checks]


def success_by_step_rows(results: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """Per minimisation attack (CW, DeepFool) the fraction of attacked samples with an adversarial found after each
    step of its search (``success_by_step``): a flat zero line is an attack that did not converge.

    Example::

        >>> success_by_step_rows(results)
        [('cw', [0.2, 0.6, 0.9])]
    """
    out = []
    for name, a in results.get("attacks", {}).items():
        steps = a.get("success_by_step")
        if steps:
            out.append((name, [float(v) if v is not None and math.isfinite(v) else math.nan for v in steps]))
    return out


def headline_lines(results: dict[str, Any]) -> list[str]:
    """The headline as plain-text lines: the standard suite's robust accuracy per ε (or its absence) and its budget
    (standard or reduced), the key verdicts, and the per-step success of the minimisation attacks.

    Example::

        >>> print("\\n".join(headline_lines(results)))
    """
    suite = standard_suite_rows(results)
    if suite:
        lines = [f"standard suite ({STANDARD_SUITE}): " + ", ".join(
            f"{r['attack']} L{r['lp']} eps={_eps(r['eps'])}: acc {_num(r['accuracy'])} (n={r['n']})" for r in suite)]
        lines += budget_lines(results)
    else:
        lines = [f"standard suite ({STANDARD_SUITE}) not run: PGD/FGSM alone may overstate robustness."]
    for c in key_verdicts(results):
        lines.append(f"[{c['status'].upper()}] {c['name']}: {c['message']}")
    for name, steps in success_by_step_rows(results):
        lines.append(f"{name} success by search step: " + " ".join(_num(v) for v in steps))
    return lines


def _eps(eps: Any) -> str:
    return "inf" if eps is None or (isinstance(eps, float) and math.isinf(eps)) else f"{eps:.4g}"


def _num(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
