# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""ε warm-up for adversarial training: ramps an attack's budget linearly over the first epochs or iterations."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["EpsSchedule"]


def _resolve(target: Any) -> Any:
    """The object holding ``eps``: the target itself, or its ``attack`` (AttackBatch, adversarial iterations)."""
    for obj in (target, getattr(target, "attack", None)):
        eps = getattr(obj, "eps", None)
        if isinstance(eps, (int, float)) and not isinstance(eps, bool):
            return obj
    raise ValueError(
        f"target must have a numeric eps or an attack with one (an Attack, AttackBatch or adversarial iteration), "
        f"got {type(target).__name__}."
    )


class EpsSchedule:
    """Linear ε warm-up: ``eps(t) = start + (eps - start) * min(1, t / num_warmup)`` at the start of epoch (or
    iteration) ``t = 1, 2, ...``, then ``eps``; an attack's ``step_size`` (if it has one) follows in proportion,
    so the step-to-budget ratio stays the one the attack was built with.

    Starting adversarial training at the full budget can stall it (the model cannot fit the adversarial examples
    yet); a warm-up is the usual remedy (e.g. Gowal et al. 2018, https://arxiv.org/abs/1810.12715; Wong et al.
    2020 ramp the learning rate instead). The current value goes to ``engine.state.metrics["eps"]`` so that
    ``StatsHandler`` / ``TensorBoardStatsHandler`` log it with the epoch metrics.

    Args:
        target: an :class:`~monai_robust.attacks.base.Attack`, or an object with an ``attack`` attribute
            (:class:`~monai_robust.engines.prepare_batch.AttackBatch`, the iterations of
            :mod:`monai_robust.engines.training`) whose ``eps`` is changed.
        num_warmup: epochs (or iterations) to reach the full budget (>= 1).
        eps: the full budget in model-input units; default the attack's ``eps`` when the schedule is built.
        start: the budget at ``t = 0``, ``0 <= start <= eps``.
        step: ``"epoch"`` (set at ``EPOCH_STARTED``) or ``"iteration"`` (at ``ITERATION_STARTED``).

    Raises:
        ValueError: When ``target`` has no ``eps``, ``num_warmup < 1``, ``eps <= 0``, ``start`` is outside
            ``[0, eps]``, or ``step`` is not ``"epoch"``/``"iteration"`` (the message quotes the value).

    Example::

        >>> EpsSchedule(attack_batch, num_warmup=5).attach(trainer)  # eps/5, 2 eps/5, ..., eps from epoch 5
    """

    def __init__(
        self, target: Any, num_warmup: int, eps: float | None = None, start: float = 0.0, step: str = "epoch"
    ) -> None:
        self.attack = _resolve(target)
        if not isinstance(num_warmup, int) or isinstance(num_warmup, bool) or num_warmup < 1:
            raise ValueError(f"num_warmup must be an integer >= 1, got num_warmup={num_warmup!r}.")
        eps = float(self.attack.eps) if eps is None else eps
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got eps={eps!r}.")
        if not (isinstance(start, (int, float)) and 0.0 <= start <= eps):
            raise ValueError(f"start must lie in [0, eps={eps}], got start={start!r}.")
        if step not in ("epoch", "iteration"):
            raise ValueError(f"step must be 'epoch' or 'iteration', got step={step!r}.")
        self.num_warmup = num_warmup
        self.eps = float(eps)
        self.start = float(start)
        self.step = step
        step_size = getattr(self.attack, "step_size", None)
        base_eps = float(self.attack.eps) if float(self.attack.eps) > 0 else self.eps
        self._step_ratio = None if not isinstance(step_size, (int, float)) else float(step_size) / base_eps

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
        self.attack.eps = eps
        if self._step_ratio is not None:
            self.attack.step_size = self._step_ratio * eps
        engine.state.metrics["eps"] = eps
