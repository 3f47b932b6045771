# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``GuardedPredictionWriter``: per-image class probabilities plus the detector guard's verdict, written as CSV and
JSON when an inference epoch completes."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["GuardedPredictionWriter"]

logger = logging.getLogger(__name__)

_IMAGE_AND_PRED = from_engine(["image", "pred"])


def _filenames(batch: Any) -> list[str]:
    return [str(getattr(item["image"], "meta", {}).get("filename_or_obj", "")) for item in batch]


class GuardedPredictionWriter:
    """Writes ``<filename>.csv`` and ``<filename>.json`` into ``output_dir``: for each image its source file, the
    class probabilities, the predicted class and, when a fitted :class:`~monai_robust.detectors.DetectorGuard` is
    given, whether an adversarial input is suspected, the detector score and the threshold. Without a guard the
    verdict fields are empty (CSV) / ``null`` (JSON), so the files keep one layout.

    The guard scores the network's *input* (the preprocessed image), so it runs on the same tensor as the model.

    Args:
        output_dir: the folder (created if needed).
        class_names: names of the network's outputs, in order.
        guard: a fitted guard, or ``None``.
        filename: stem of the two files.
        output_transform: ``engine.state.output -> (images, probabilities)``; default the ``image`` and ``pred``
            keys of the decollated output (``pred`` after a softmax in the postprocessing).
        batch_transform: ``engine.state.batch -> list of source file names``; default the images' meta data.

    Raises:
        ValueError: When ``class_names`` is empty.

    Example::

        >>> writer = GuardedPredictionWriter("outputs", ["normal", "lesion"], guard=guard)
        >>> evaluator = SupervisedEvaluator(..., val_handlers=[writer])  # outputs/predictions.csv + .json
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        guard: Callable[[torch.Tensor], Any] | None = None,
        filename: str = "predictions",
        output_transform: Callable[[Any], Any] = _IMAGE_AND_PRED,
        batch_transform: Callable[[Any], list[str]] = _filenames,
    ) -> None:
        if not class_names:
            raise ValueError(f"class_names must name the network's outputs, got {class_names!r}.")
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.guard = guard
        self.filename = filename
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        """Collects at ``ITERATION_COMPLETED``, writes at ``EPOCH_COMPLETED`` (starting afresh each epoch)."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def collect(self, engine: Engine) -> None:
        """Adds the rows of the current batch.

        Raises:
            ValueError: When a prediction's length differs from the number of class names.
        """
        images, preds = self.output_transform(engine.state.output)
        names = self.batch_transform(engine.state.batch)
        x = torch.stack([torch.as_tensor(i).as_subclass(torch.Tensor) for i in images]).float()
        verdicts = self.guard.verdicts(x) if self.guard is not None else [None] * len(x)
        for name, pred, verdict in zip(names, preds, verdicts):
            p = torch.as_tensor(pred).detach().float().reshape(-1).cpu()
            if p.numel() != len(self.class_names):
                raise ValueError(f"a prediction has {p.numel()} values for {len(self.class_names)} class names.")
            self.rows.append({
                "filename": name,
                "probabilities": dict(zip(self.class_names, p.tolist())),
                "predicted_class": self.class_names[int(p.argmax())],
                "guard": verdict,
            })

    def __call__(self, engine: Engine) -> None:
        """Writes the CSV and JSON files of the epoch."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{self.filename}.json").write_text(json.dumps(self.rows, indent=1))
        header = ["filename", *(f"p_{c}" for c in self.class_names), "predicted_class", "adversarial_suspected",
                  "guard_score", "guard_threshold"]
        with open(self.output_dir / f"{self.filename}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in self.rows:
                g = r["guard"] or {}
                w.writerow([r["filename"], *r["probabilities"].values(), r["predicted_class"],
                            g.get("adversarial_suspected", ""), g.get("score", ""), g.get("threshold", "")])
        suspected = sum(bool(r["guard"] and r["guard"]["adversarial_suspected"]) for r in self.rows)
        logger.info("%d predictions written to %s (%s)", len(self.rows), self.output_dir / f"{self.filename}.csv",
                    f"{suspected} flagged by the guard" if self.guard is not None else "no guard")
