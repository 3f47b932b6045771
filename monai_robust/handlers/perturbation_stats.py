# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``PerturbationStats``: running statistics of the adversarial perturbations an engine produces: their Lp size,
the fraction that reaches the ε boundary, and violations of the budget or of the data bounds."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.attacks.functional import lp_norm
from monai_robust.report.table import key_label
from monai_robust.utils.enums import as_lp

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["PerturbationStats"]

logger = logging.getLogger(__name__)


def _default_output(output: Any) -> tuple[torch.Tensor, dict[str, dict[str, Any]]]:
    return output["image"], output.get("adversarial", {})


class PerturbationStats:
    """Per (attack, ε): mean and max ``||δ||_p``, the fraction of samples whose perturbation reaches the boundary
    (``||δ||_p >= (1 - boundary_rtol) * eps``), and the counts of budget violations (``> eps``) and of samples
    leaving the bounds. Accumulated over each epoch and written to ``engine.state.metrics`` as
    ``"<key>/delta_norm_mean"``, ``"<key>/delta_norm_max"``, ``"<key>/at_boundary"``, ``"<key>/over_budget"``,
    ``"<key>/out_of_bounds"``.

    Args:
        output_transform: ``engine.state.output -> (clean images, {key: {"image": adversarial, "eps", "lp",
            "bounds"}})``; the default reads the output of
            :class:`~monai_robust.engines.evaluator.RobustnessEvaluator`.
        boundary_rtol: relative distance to ε still counted as "at the boundary".
        budget_rtol: relative slack before a norm counts as over budget (floating-point error).
        log: log the statistics at the end of each epoch.

    Raises:
        ValueError: When a tolerance is negative.

    Example::

        >>> stats = PerturbationStats()
        >>> stats.attach(evaluator)
        >>> evaluator.run()
        >>> evaluator.state.metrics["pgd@0.0156863/at_boundary"]
    """

    def __init__(
        self,
        output_transform: Callable[[Any], tuple[torch.Tensor, dict[str, dict[str, Any]]]] = _default_output,
        boundary_rtol: float = 1e-3,
        budget_rtol: float = 1e-5,
        log: bool = True,
    ) -> None:
        for name, v in (("boundary_rtol", boundary_rtol), ("budget_rtol", budget_rtol)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={v!r}.")
        self.output_transform = output_transform
        self.boundary_rtol = float(boundary_rtol)
        self.budget_rtol = float(budget_rtol)
        self.log = bool(log)
        self.stats: dict[str, dict[str, float]] = {}

    def attach(self, engine: Engine) -> None:
        """Resets at ``EPOCH_STARTED``, accumulates at ``ITERATION_COMPLETED``, publishes at ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def reset(self, engine: Engine | None = None) -> None:
        """Forgets the accumulated statistics."""
        self.stats = {}

    def __call__(self, engine: Engine) -> None:
        """Adds the perturbations of the current iteration."""
        clean, entries = self.output_transform(engine.state.output)
        for key, e in entries.items():
            adv = e.get("image")
            if adv is None:
                continue
            name = key_label(*key) if isinstance(key, tuple) else str(key)
            self.update(name, clean, adv, e.get("eps"), e.get("lp", "inf"), e.get("bounds"))

    def update(
        self,
        key: str,
        clean: torch.Tensor,
        adversarial: torch.Tensor,
        eps: float | None,
        lp: str | float = "inf",
        bounds: tuple[float, float] | None = None,
    ) -> None:
        """Adds one batch of one attack.

        Args:
            key: the name the statistics are kept under.
            clean: ``(N, C, *spatial)`` clean images.
            adversarial: the perturbed images, same shape.
            eps: the budget in model units (``None``: no budget, no boundary/budget counts).
            lp: the norm of the budget.
            bounds: ``(low, high)`` of valid inputs, or ``None``.
        """
        n = clean.shape[0]
        norms = lp_norm((adversarial - clean).detach().float(), as_lp(lp))
        s = self.stats.setdefault(
            key, {"n": 0, "norm_sum": 0.0, "norm_max": 0.0, "at_boundary": 0, "over_budget": 0, "out_of_bounds": 0}
        )
        s["n"] += n
        s["norm_sum"] += float(norms.sum())
        s["norm_max"] = max(s["norm_max"], float(norms.max()))
        if eps is not None and math.isfinite(eps):
            s["at_boundary"] += int((norms >= (1 - self.boundary_rtol) * eps).sum()) if eps > 0 else 0
            s["over_budget"] += int((norms > eps * (1 + self.budget_rtol) + 1e-7).sum())
        if bounds is not None:
            flat = adversarial.detach().reshape(n, -1)
            tol = 1e-5 * (bounds[1] - bounds[0])
            s["out_of_bounds"] += int(((flat.amin(1) < bounds[0] - tol) | (flat.amax(1) > bounds[1] + tol)).sum())

    def summary(self) -> dict[str, dict[str, float]]:
        """``{key: {"n", "delta_norm_mean", "delta_norm_max", "at_boundary" (fraction), "over_budget",
        "out_of_bounds"}}`` of what was accumulated."""
        return {
            k: {
                "n": s["n"],
                "delta_norm_mean": s["norm_sum"] / max(s["n"], 1),
                "delta_norm_max": s["norm_max"],
                "at_boundary": s["at_boundary"] / max(s["n"], 1),
                "over_budget": s["over_budget"],
                "out_of_bounds": s["out_of_bounds"],
            }
            for k, s in self.stats.items()
        }

    def epoch_completed(self, engine: Engine) -> None:
        """Writes :meth:`summary` into ``engine.state.metrics`` (and the log)."""
        for key, s in self.summary().items():
            for name, v in s.items():
                if name != "n":
                    engine.state.metrics[f"{key}/{name}"] = v
            if self.log:
                logger.info(
                    "%s: |delta| mean %.4g max %.4g, %.1f%% at the eps boundary, %d over budget, %d out of bounds",
                    key, s["delta_norm_mean"], s["delta_norm_max"], 100 * s["at_boundary"], s["over_budget"],
                    s["out_of_bounds"],
                )
            if s["over_budget"] or s["out_of_bounds"]:
                logger.warning("%s: %d perturbations over budget, %d out of bounds", key, s["over_budget"], s["out_of_bounds"])
