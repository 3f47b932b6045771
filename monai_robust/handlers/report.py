# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``RobustnessReport``: writes a robustness evaluation (JSON, PNG figures, HTML page, console table) when the
evaluator's epoch completes, and whatever was computed when the run fails. In a data-parallel run only rank 0
writes (the evaluator's results already cover every rank's shard)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.report.table import format_table
from monai_robust.report.writer import write_json, write_report

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["RobustnessReport"]

logger = logging.getLogger(__name__)


def _is_writer() -> bool:
    """False on ranks other than 0 of an initialised ``torch.distributed`` process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _default_results(engine: Any) -> dict[str, Any] | None:
    return getattr(engine.state, "robustness", None) or getattr(engine, "results", None) or None


class RobustnessReport:
    """Writes ``robustness.json`` (every number), PNG figures and ``index.html`` into ``output_dir``, and prints
    the summary table, when the evaluation epoch completes. If the run raises, the results computed so far are
    written (marked ``meta.complete = false``) before the exception goes on. When ``torch.distributed`` is
    initialised only rank 0 writes and prints.

    Args:
        output_dir: the report folder (created if needed).
        html: also draw the PNG figures and the HTML page (needs matplotlib); ``False`` writes the JSON only.
        console: print the summary table and the validity verdicts.
        stream: where the table is printed; default ``sys.stdout``.
        title: the HTML page title.
        results_transform: ``engine -> results dict``; default ``engine.state.robustness`` as set by
            :class:`~monai_robust.engines.evaluator.RobustnessEvaluator`.
        examples_transform: ``engine -> examples`` for the example panels; default ``engine.examples``.

    Example::

        >>> evaluator = RobustnessEvaluator(..., val_handlers=[RobustnessReport("report/")])
        >>> evaluator.run()  # report/robustness.json, report/index.html, report/*.png
    """

    def __init__(
        self,
        output_dir: str | Path,
        html: bool = True,
        console: bool = True,
        stream: IO[str] | None = None,
        title: str = "Robustness report",
        results_transform: Callable[[Any], dict[str, Any] | None] = _default_results,
        examples_transform: Callable[[Any], dict[str, Any] | None] = lambda engine: getattr(engine, "examples", None),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.html = bool(html)
        self.console = bool(console)
        self.stream = stream
        self.title = title
        self.results_transform = results_transform
        self.examples_transform = examples_transform
        self.paths: dict[str, Path] = {}

    def attach(self, engine: Engine) -> None:
        """Writes at ``EPOCH_COMPLETED`` and, for a failing run, at ``EXCEPTION_RAISED``."""
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if not engine.has_event_handler(self.exception_raised, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def __call__(self, engine: Engine) -> None:
        """Writes the report of the completed evaluation.

        Raises:
            RuntimeError: When the engine holds no results (not a robustness evaluator, or nothing evaluated).
        """
        results = self.results_transform(engine)
        if not results:
            raise RuntimeError("no robustness results on the engine: attach RobustnessReport to a RobustnessEvaluator.")
        self._write(engine, results)

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Writes the partial results (if any). A :class:`RobustnessEvaluator` re-raises ``e`` itself; any other
        engine gets ``e`` re-raised here, as ignite's convention for exception handlers requires."""
        results = self.results_transform(engine)
        if results and _is_writer():
            try:
                self._write(engine, results)
                logger.error("evaluation failed (%s); partial results written to %s", e, self.output_dir)
            except Exception as inner:
                logger.error("could not write the partial report: %s", inner)
        if not getattr(engine, "reraises_after_handlers", False):
            raise e

    def _write(self, engine: Engine, results: dict[str, Any]) -> None:
        if not _is_writer():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.html:
            self.paths = write_report(results, self.output_dir, self.examples_transform(engine), title=self.title)
        else:
            self.paths = {"json": write_json(results, self.output_dir / "robustness.json")}
        if self.console:
            print(format_table(results), file=self.stream or sys.stdout, flush=True)
        logger.info("robustness report written to %s", self.output_dir)
