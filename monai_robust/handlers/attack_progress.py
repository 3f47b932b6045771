# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``AttackProgress``: a progress bar with a time estimate that moves *inside* each attack call of a robustness
evaluation (one tick per model pass), so that a long AutoAttack or Square call on one batch is not minutes of
silence, as a per-batch bar is."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.engines.budget import planned_passes
from monai_robust.engines.events import RobustEvents, register_robust_events
from monai_robust.report.table import key_label

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
tqdm, _has_tqdm = optional_import("tqdm.auto", name="tqdm")

__all__ = ["AttackProgress"]

logger = logging.getLogger(__name__)


class AttackProgress:
    """A tqdm bar over the model passes a :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` run plans:
    per batch, every attack's :func:`~monai_robust.engines.budget.planned_passes` at each of its ε (once for a
    minimisation attack). A forward hook on the evaluator's network ticks the bar during each attack call (at most
    that call's planned passes); at the end of a call and of a batch it jumps to the planned mark, since early
    stopping and retired samples make the real count smaller. The time estimate therefore adapts as the run goes and
    errs on the long side; the postfix names the attack and ε being run.

    Args:
        desc: the bar's label.
        disable: no bar (for ``--quiet``); without tqdm installed there is none either (logged once).
        tqdm_kwargs: further ``tqdm`` arguments (``file``: default ``sys.stderr``; ``mininterval`` in seconds).

    Example::

        >>> evaluator = RobustnessEvaluator(..., progress=False)
        >>> AttackProgress().attach(evaluator)
        >>> evaluator.run()  # robustness: 37%|###7      | 4810/13000 [01:02<01:46, 77.5 passes/s, AutoAttack eps=0.0157]
    """

    def __init__(self, desc: str = "robustness", disable: bool = False, **tqdm_kwargs: Any) -> None:
        self.desc = str(desc)
        self.disable = bool(disable)
        self.tqdm_kwargs = {"dynamic_ncols": True, **tqdm_kwargs}
        self.bar: Any = None
        self._hook: Any = None
        self._per_batch: int | None = None
        self._call_end = 0
        self._counting = False

    def attach(self, engine: Engine) -> None:
        """Adds the bar to a robustness evaluator (it needs ``engine.plans`` and ``engine.network``)."""
        register_robust_events(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(RobustEvents.ATTACK_STARTED, self._attack_started)
        engine.add_event_handler(RobustEvents.ATTACK_COMPLETED, self._attack_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception)

    def _started(self, engine: Engine) -> None:
        self._close(engine)
        self._per_batch = None
        if self.disable:
            return
        if not _has_tqdm:
            logger.warning("AttackProgress: tqdm is not installed, no progress bar.")
            return
        self.bar = tqdm(desc=self.desc, unit=" passes", **self.tqdm_kwargs)
        self._hook = engine.network.register_forward_hook(self._tick)

    @staticmethod
    def _classes(engine: Engine) -> int:
        """The number of classes, from the clean logits of the batch (a single-logit head counts 2)."""
        logits = engine.state.output["pred"]
        return int(logits.shape[-1]) if logits.ndim > 1 and logits.shape[-1] > 1 else 2

    def _attack_started(self, engine: Engine) -> None:
        if self.bar is None:
            return
        if self._per_batch is None:  # the first call: the clean pass has given the number of classes
            classes = self._classes(engine)
            self._per_batch = sum(planned_passes(p.attack, classes) * (1 if p.minimization else len(p.eps)) for p in engine.plans)
            self.bar.total = self._per_batch * (engine.state.epoch_length or 1)
        name, eps = engine.state.attack_key
        plan = next(p for p in engine.plans if p.name == name)
        self._call_end = self.bar.n + planned_passes(plan.attack, self._classes(engine))
        self._counting = True
        self.bar.set_postfix_str(key_label(name, eps), refresh=False)

    def _tick(self, module: Any, args: Any, output: Any) -> None:
        if self._counting and self.bar is not None and self.bar.n < self._call_end:
            self.bar.update(1)

    def _attack_completed(self, engine: Engine) -> None:
        self._counting = False
        if self.bar is not None and self.bar.n < self._call_end:
            self.bar.update(self._call_end - self.bar.n)

    def _iteration_completed(self, engine: Engine) -> None:
        if self.bar is not None and self._per_batch is not None:
            mark = self._per_batch * engine.state.iteration
            if self.bar.n < mark:
                self.bar.update(mark - self.bar.n)

    def _exception(self, engine: Engine, e: BaseException) -> None:
        """Closes the bar; re-raises ``e`` unless the engine does (as a robustness evaluator does)."""
        self._close(engine)
        if not getattr(engine, "reraises_after_handlers", False):
            raise e

    def _close(self, engine: Engine) -> None:
        self._counting = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
