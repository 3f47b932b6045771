# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``RobustnessMLFlowHandler``: MONAI's ``MLFlowHandler`` for the robustness evaluator, so that robust accuracy per
attack and ε, the guard's AUC and the validity verdicts reach MLflow (``python -m monai.bundle run --tracking
configs/tracking.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monai.handlers import MLFlowHandler
from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.handlers.robustness_curves import CURVE_METRICS, robustness_curves, tracking_name

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["RobustnessMLFlowHandler"]


class RobustnessMLFlowHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` whose epoch log is the robustness evaluation (``engine.state.robustness``).

    Logged at the end of the evaluation (names made MLflow-safe by
    :func:`~monai_robust.handlers.robustness_curves.tracking_name`):

    - metrics ``clean/<metric>`` (step 0);
    - per attack a curve over ε: ``<attack>/<metric>`` (robust accuracy, AUC, sensitivity, specificity, attack success
      rate, the guard's ``detector_auc`` with ``detector_n_clean`` / ``detector_n_adversarial``) with **step = ε index**
      in ascending ε, and ``<attack>/eps`` holding the ε of each step (model units);
    - params ``eps/<attack>`` (the ε list, JSON) and ``validity/<check>`` (the verdict: pass / warn / fail /
      skipped), metrics ``validity/failed`` and ``validity/warned`` (counts).

    An engine without robustness results (e.g. a plain validator) gets MONAI's default epoch log.

    Args:
        results_transform: ``engine -> results``; default ``engine.state.robustness``.
        kwargs: :class:`monai.handlers.MLFlowHandler` arguments (``tracking_uri``, ``experiment_name``, ``run_name``,
            ``artifacts``, ``close_on_complete``, ...); ``epoch_logger`` is this handler's.

    Raises:
        ValueError: When ``epoch_logger`` is given (this handler is one).

    Example::

        >>> RobustnessMLFlowHandler(tracking_uri="sqlite:///runs/mlruns.db", run_name="evaluate").attach(evaluator)
    """

    def __init__(
        self,
        results_transform: Callable[[Any], dict[str, Any] | None] = lambda e: getattr(e.state, "robustness", None),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("epoch_logger") is not None:
            raise ValueError("RobustnessMLFlowHandler logs the robustness results itself: do not pass epoch_logger.")
        kwargs.setdefault("iteration_log", False)
        super().__init__(epoch_logger=self.log_robustness, **kwargs)
        self.results_transform = results_transform

    def log_robustness(self, engine: Engine) -> None:
        """Logs the completed evaluation's results (see the class docstring)."""
        results = self.results_transform(engine)
        if not results:
            self._default_epoch_log(engine)
            return
        clean = results.get("clean") or {}
        self._log_metrics({f"clean/{m}": float(clean[m]) for m in CURVE_METRICS if _number(clean.get(m))}, step=0)
        params: dict[str, str] = {}
        for attack, points in robustness_curves(results).items():
            name = tracking_name(attack)
            params[f"eps/{name}"] = json.dumps([eps for eps, _ in points])
            for step, (eps, metrics) in enumerate(points):
                values = {f"{name}/{m}": v for m, v in metrics.items()}
                if eps is not None:
                    values[f"{name}/eps"] = eps
                self._log_metrics(values, step=step)
        verdicts = results.get("validity") or []
        for check in verdicts:
            params[f"validity/{tracking_name(check.get('name', '?'))}"] = str(check.get("status"))
        self._log_metrics(
            {
                "validity/failed": float(sum(c.get("status") == "fail" for c in verdicts)),
                "validity/warned": float(sum(c.get("status") == "warn" for c in verdicts)),
            },
            step=0,
        )
        self._delete_exist_param_in_dict(params)
        if params:
            self._log_params(params)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
