# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""What :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` runs: one :class:`AttackPlan` per configured
attack (its ε list, norm, box and kind, read from the attack's type) and the evaluator's options."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from monai_robust.attacks.base import Attack, BoundedAttack, MinimizationAttack
from monai_robust.utils.enums import LpNorm

__all__ = ["AttackPlan", "EvaluationOptions", "build_plans"]

_RESERVED = ("uap:", "noise:", "clean")


@dataclass(frozen=True)
class EvaluationOptions:
    """How the evaluator runs the attacks and what it keeps.

    Args:
        reuse_smaller_eps: retire samples already broken, clean or at a smaller ε of the same attack (see
            :class:`~monai_robust.engines.evaluator.RobustnessEvaluator`).
        early_stop: call bounded attacks with ``early_stop=True`` (a sample is broken as soon as one iterate fools
            the model); ``False`` runs them as configured.
        noise_control: evaluate random noise of each white-box (Lp, ε) as a control.
        check_data_range: refuse data covering under 5 % of the attacks' bounds (a units mismatch).
        num_examples: samples of the first batch kept (CPU, middle slice for 3D) for the report's example panels.
        keep_images: put the adversarial images in ``engine.state.output["adversarial"][key]["image"]``.

    Raises:
        ValueError: When ``num_examples`` is not a non-negative integer.

    Example::

        >>> EvaluationOptions(reuse_smaller_eps=False, early_stop=False)
    """

    reuse_smaller_eps: bool = True
    early_stop: bool = True
    noise_control: bool = True
    check_data_range: bool = True
    num_examples: int = 4
    keep_images: bool = True

    def __post_init__(self) -> None:
        n = self.num_examples
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"num_examples must be a non-negative integer, got num_examples={n!r}.")


@dataclass
class AttackPlan:
    """One configured attack and the budgets it is evaluated at.

    Args:
        name: the attack's name in the results.
        attack: the attack object (called with ``eps=`` for a bounded attack; once for a minimisation attack).
        eps: budgets in increasing order, in model-input units; ``inf`` is the unbounded budget of a minimisation
            attack.
        kind: ``"single-step"``, ``"iterative"``, ``"minimal"`` or ``"black-box"``, from the attack's type.
        reference: a gradient-free or transfer attack (validity checks compare white-box attacks with it).
        description: the attack's ``repr`` for the report.
    """

    name: str
    attack: Attack
    eps: list[float]
    kind: str
    reference: bool
    description: str
    failed: dict[float, str] = field(default_factory=dict)
    rng: dict[float, np.random.RandomState] = field(default_factory=dict)

    @property
    def lp(self) -> LpNorm:
        return self.attack.lp

    @property
    def bounds(self) -> tuple[float, float] | None:
        return self.attack.bounds

    @property
    def minimization(self) -> bool:
        """Crafted once per batch and thresholded at every ε."""
        return isinstance(self.attack, MinimizationAttack)

    def seed(self, seed: int | None) -> None:
        """One random stream per ε, each seeded with ``seed``: the result at one ε does not depend on which other
        budgets are evaluated (``None``: the attack's own stream)."""
        self.rng = {} if seed is None else {e: np.random.RandomState(seed) for e in self.eps}


def attack_kind(attack: Attack) -> str:
    """``"minimal"`` (a minimisation attack), ``"black-box"``, ``"single-step"`` or ``"iterative"``, from the type.

    Example::

        >>> attack_kind(FGSM(net, 0.01)), attack_kind(CW(net, bounds=(0, 1)))
        ('single-step', 'minimal')
    """
    if isinstance(attack, MinimizationAttack):
        return "minimal"
    if attack.black_box:
        return "black-box"
    return "single-step" if isinstance(attack, BoundedAttack) and attack.single_step else "iterative"


def _eps_list(name: str, attack: Attack, given: Any) -> list[float]:
    """The sorted, checked budgets of one attack: ``given`` (one value or a sequence), else the attack's own."""
    if given is None:
        if isinstance(attack, MinimizationAttack):
            return [math.inf]
        if attack.eps is None:
            raise ValueError(f"attack {name!r} was built without eps: give its eps list (eps=[...] or eps={{{name!r}: [...]}}).")
        return [attack.eps]
    values = [given] if isinstance(given, (int, float)) or getattr(given, "ndim", 1) == 0 else list(given)
    if not values:
        raise ValueError(f"the eps list of attack {name!r} is empty.")
    out = []
    for e in values:
        unbounded = e is None or (isinstance(e, float) and math.isinf(e) and e > 0)
        if unbounded and not isinstance(attack, MinimizationAttack):
            raise ValueError(f"attack {name!r} is a bounded attack: eps=None/inf is only for CW/DeepFool, got {given!r}.")
        out.append(math.inf if unbounded else attack.check_eps(e))
    if len(set(out)) != len(out):
        raise ValueError(f"the eps list of attack {name!r} has duplicates: {list(values)!r}.")
    return sorted(out)


def build_plans(
    attacks: Mapping[str, Attack], eps: Sequence[Any] | Mapping[str, Any] | None, references: set[str], network: nn.Module
) -> list[AttackPlan]:
    """One :class:`AttackPlan` per attack, with every argument checked.

    Args:
        attacks: ``{name: attack}``.
        eps: the budgets of every attack, or ``{name: budgets}`` per attack; an attack without budgets is run at
            its own ``eps`` (a minimisation attack: unbounded).
        references: names of gradient-free or transfer attacks.
        network: the evaluated network; an attack on another network is a transfer attack (a reference).

    Raises:
        ValueError: On a bad name, an object that is not an ``Attack``, a targeted attack, a bad budget, or
            ``eps``/``references`` naming unknown attacks.
    """
    unknown = references - set(attacks)
    if unknown:
        raise ValueError(f"reference_attacks names {sorted(unknown)} that are not in attacks {sorted(attacks)}.")
    if isinstance(eps, Mapping) and set(eps) - set(attacks):
        raise ValueError(f"eps is given for {sorted(set(eps) - set(attacks))}, which are not in attacks {sorted(attacks)}.")
    plans = []
    for name, attack in attacks.items():
        if not isinstance(name, str) or not name or "@" in name or name.startswith(_RESERVED):
            raise ValueError(f"attack names must be non-empty strings without '@' or a reserved prefix, got {name!r}.")
        if not isinstance(attack, Attack):
            raise ValueError(
                f"attack {name!r} must be a monai_robust Attack (e.g. PGD(network, bounds=...)), got {attack!r}."
            )
        if attack.targeted:
            raise ValueError(
                f"attack {name!r} is targeted; the evaluator measures untargeted robustness (targeted universal "
                "perturbations are given through uaps=)."
            )
        budgets = _eps_list(name, attack, eps.get(name) if isinstance(eps, Mapping) else eps)
        transfer = attack.network is not network
        plans.append(
            AttackPlan(
                name=name,
                attack=attack,
                eps=budgets,
                kind=attack_kind(attack),
                reference=name in references or transfer or attack.black_box,
                description=repr(attack) + (" [transfer: crafted on another network]" if transfer else ""),
            )
        )
    return plans
