# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""ε warm-up for adversarial training: ramps the budget an attack is called with, linearly over the first epochs or
iterations."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.attacks.base import BoundedAttack
from monai_robust.engines.prepare_batch import AttackBatch
from monai_robust.engines.training import AdversarialIteration

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["EpsSchedule"]


class EpsSchedule:
    """Linear ε warm-up: ``eps(t) = start + (eps - start) * min(1, t / num_warmup)`` at the start of epoch (or
    iteration) ``t = 1, 2, ...``, then ``eps``.

    The schedule sets ``target.eps``, the budget that an :class:`~monai_robust.engines.prepare_batch.AttackBatch` or
    an adversarial iteration of :mod:`monai_robust.engines.training` passes to its
    :class:`~monai_robust.attacks.base.BoundedAttack` at each call (``attack(x, y, eps=...)``); the attack itself is
    not changed. An attack built with a relative step (``rel_step_size``, PGD's default ``2.5 / num_steps``) keeps
    its step-to-budget ratio; one built with an absolute ``step_size`` keeps that step.

    Starting adversarial training at the full budget can stall it (the model cannot fit the adversarial examples
    yet); a warm-up is the usual remedy (e.g. Gowal et al. 2018, https://arxiv.org/abs/1810.12715; Wong et al.
    2020 ramp the learning rate instead). The current value goes to ``engine.state.metrics["eps"]`` so that
    ``StatsHandler`` / ``TensorBoardStatsHandler`` log it with the epoch metrics.

    Args:
        target: an :class:`~monai_robust.engines.prepare_batch.AttackBatch` or
            :class:`~monai_robust.engines.training.AdversarialIteration` whose ``attack`` is a bounded attack.
        num_warmup: epochs (or iterations) to reach the full budget (>= 1).
        eps: the full budget in model-input units; default ``target.eps``, else the attack's own ``eps``.
        start: the budget at ``t = 0``, ``0 <= start <= eps``.
        step: ``"epoch"`` (set at ``EPOCH_STARTED``) or ``"iteration"`` (at ``ITERATION_STARTED``).

    Raises:
        ValueError: When ``target`` is not one of the above with a bounded attack, ``num_warmup < 1``, there is no
            full budget or it is not ``> 0``, ``start`` is outside ``[0, eps]``, or ``step`` is not
            ``"epoch"``/``"iteration"`` (the message quotes the value).

    Example::

        >>> EpsSchedule(attack_batch, num_warmup=5).attach(trainer)  # eps/5, 2 eps/5, ..., eps from epoch 5
    """

    def __init__(
        self, target: Any, num_warmup: int, eps: float | None = None, start: float = 0.0, step: str = "epoch"
    ) -> None:
        if not isinstance(target, (AttackBatch, AdversarialIteration)) or not isinstance(target.attack, BoundedAttack):
            raise ValueError(
                "target must be an AttackBatch or adversarial iteration holding a bounded attack (PGD, FGSM, ...) "
                f"whose eps it passes at each call, got {target!r}."
            )
        if not isinstance(num_warmup, int) or isinstance(num_warmup, bool) or num_warmup < 1:
            raise ValueError(f"num_warmup must be an integer >= 1, got num_warmup={num_warmup!r}.")
        if eps is None:
            eps = target.eps if target.eps is not None else target.attack.eps
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"the full eps must be a finite number > 0, got eps={eps!r}.")
        if not (isinstance(start, (int, float)) and 0.0 <= start <= eps):
            raise ValueError(f"start must lie in [0, eps={eps}], got start={start!r}.")
        if step not in ("epoch", "iteration"):
            raise ValueError(f"step must be 'epoch' or 'iteration', got step={step!r}.")
        self.target = target
        self.num_warmup = num_warmup
        self.eps = target.attack.check_eps(eps)
        self.start = float(start)
        self.step = step

    def value(self, t: int) -> float:
        """The budget at epoch / iteration ``t`` (1-based)."""
        return self.start + (self.eps - self.start) * min(1.0, t / self.num_warmup)

    def attach(self, engine: Engine) -> None:
        """Sets the budget at every ``EPOCH_STARTED`` (or ``ITERATION_STARTED``) of ``engine``."""
        event = Events.EPOCH_STARTED if self.step == "epoch" else Events.ITERATION_STARTED
        if not engine.has_event_handler(self, event):
            engine.add_event_handler(event, self)

    def __call__(self, engine: Engine) -> None:
        t = engine.state.epoch if self.step == "epoch" else engine.state.iteration
        eps = self.value(t)
        self.target.eps = eps
        engine.state.metrics["eps"] = eps
