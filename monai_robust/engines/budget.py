# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""An attack's iteration and query budget, for the report (is AutoAttack run at the standard version's budget or a
reduced one?) and for progress bars (how many model passes an attack call plans).

The standard budget is AutoAttack's, as Croce & Hein (ICML 2020, https://arxiv.org/abs/2003.01690) run it: 100
iterations of APGD-CE, APGD-T and FAB-T, 9 target classes, 5,000 Square queries: the defaults of
:class:`~monai_robust.attacks.autoattack.AutoAttack` and :class:`~monai_robust.attacks.square.Square`, read from their
signatures here (never restated).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from monai_robust.attacks.autoattack import STANDARD_ATTACKS, AutoAttack
from monai_robust.attacks.square import Square

__all__ = ["BUDGET_KEYS", "attack_budget", "planned_passes", "standard_budget"]

BUDGET_KEYS = ("num_steps", "num_restarts", "num_queries", "num_target_classes", "binary_search_steps")
"""The integer attributes of an attack that set how much work it does."""


def _default(cls: type, name: str) -> int:
    return int(inspect.signature(cls.__init__).parameters[name].default)


def standard_budget(attack: Any) -> dict[str, Any] | None:
    """The standard version's budget for an :class:`AutoAttack` or a :class:`Square`, else ``None``.

    Example::

        >>> standard_budget(AutoAttack(net))
        {'attacks': ['apgd-ce', 'apgd-t', 'fab-t', 'square'], 'num_steps': 100, 'num_queries': 5000, 'num_target_classes': 9}
    """
    if isinstance(attack, AutoAttack):
        return {
            "attacks": list(STANDARD_ATTACKS),
            "num_steps": _default(AutoAttack, "num_steps"),
            "num_queries": _default(AutoAttack, "num_queries"),
            "num_target_classes": _default(AutoAttack, "num_target_classes"),
        }
    if isinstance(attack, Square):
        return {"num_queries": _default(Square, "num_queries")}
    return None


def attack_budget(attack: Any) -> dict[str, Any]:
    """The budget an attack runs with: its :data:`BUDGET_KEYS` attributes, and for AutoAttack and Square whether it is
    the standard version's budget (``"standard"``), the standard values and, when reduced, what was reduced.

    Args:
        attack: any attack object.

    Returns:
        ``{key: value}`` of the attributes it has; with ``"attacks"`` (AutoAttack's sub-attacks), ``"standard"``
        (bool), ``"standard_budget"`` and ``"reduced"`` (``["num_steps 10 < 100", ...]``) for AutoAttack and Square.

    Example::

        >>> attack_budget(AutoAttack(net, num_steps=10, num_queries=100))["reduced"]
        ['num_steps 10 < 100', 'num_queries 100 < 5000']
    """
    out: dict[str, Any] = {}
    if isinstance(attack, AutoAttack):
        out["attacks"] = list(attack.attack_names)
    for key in BUDGET_KEYS:
        value = getattr(attack, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
    standard = standard_budget(attack)
    if standard is None:
        return out
    reduced = [f"{k} {out[k]} < {v}" for k, v in standard.items() if k != "attacks" and out.get(k, v) < v]
    missing = [a for a in standard.get("attacks", []) if a not in out.get("attacks", [])]
    if missing:
        reduced.append(f"without {', '.join(missing)}")
    out.update(standard=not reduced, standard_budget=standard, reduced=reduced)
    return out


def planned_passes(attack: Any, num_classes: int = 2) -> int:
    """The model passes (forward, with or without a backward) one call of ``attack`` plans per batch at most: steps
    or queries, times restarts, binary-search steps and targets; an ensemble sums its attacks. Early stopping makes
    the real count smaller. For a progress bar's time estimate, not a cost model.

    Args:
        attack: any attack object (one without a budget attribute counts 1: a single-step attack).
        num_classes: the model's classes (targets of a targeted sub-attack: at most ``num_classes - 1``).

    Returns:
        An integer >= 1.

    Example::

        >>> planned_passes(AutoAttack(net, num_steps=10, num_queries=100), num_classes=2)
        130
    """
    subs = getattr(attack, "attacks", None)
    if isinstance(subs, Mapping) and subs:
        return sum(planned_passes(a, num_classes) for a in subs.values())
    n = getattr(attack, "num_queries", None) or getattr(attack, "num_steps", None) or 1
    for key in ("num_restarts", "binary_search_steps"):
        n *= getattr(attack, key, None) or 1
    targets = getattr(attack, "num_target_classes", None)
    if targets:
        n *= max(1, min(int(targets), max(int(num_classes), 2) - 1))
    return max(1, int(n))
