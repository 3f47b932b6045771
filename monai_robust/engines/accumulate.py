# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Per-sample accumulation for :class:`~monai_robust.engines.evaluator.RobustnessEvaluator`: named fields on MONAI's
``Cumulative`` (whose ``get_buffer`` gathers every rank's values), the per-attack counts and times, and the one
exchange of small run records between ranks when an epoch completes."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from monai.metrics import Cumulative

from monai_robust.report.table import key_label

__all__ = ["AttackTally", "SampleStore", "clock", "distributed", "gather_records", "merge_records"]


def clock() -> tuple[float, float]:
    """Wall-clock and process-CPU seconds now."""
    return time.perf_counter(), time.process_time()


def distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SampleStore(Cumulative):
    """Per-sample values of named fields across batches, on MONAI's :class:`~monai.metrics.Cumulative`.

    :meth:`get` returns every rank's values (``Cumulative``'s sync, a collective the first time it is called on each
    rank after new data); :meth:`local` returns this rank's without communicating (partial results after an error,
    when the other ranks may not be there to answer).

    Args:
        fields: the names of the per-sample values, in the order :meth:`add` takes them.

    Example::

        >>> s = SampleStore(("logits", "norm"))
        >>> s.add(logits=torch.zeros(4, 2), norm=torch.ones(4))
        >>> s.get()["norm"].shape, s.n_local
        (torch.Size([4]), 4)
    """

    def __init__(self, fields: Sequence[str]) -> None:
        super().__init__()
        self.fields = tuple(fields)
        self.n_local = 0

    def add(self, **values: torch.Tensor) -> None:
        """Adds one batch: a batch-first tensor per field (copied to the CPU: callers may change theirs later)."""
        self.extend(*(values[k].detach().cpu().clone() for k in self.fields))
        self.n_local += int(values[self.fields[0]].shape[0])

    def aggregate(self) -> dict[str, torch.Tensor]:
        """Every rank's values, ``{field: tensor}`` (``Cumulative``'s abstract method)."""
        return self.get()

    def get(self) -> dict[str, torch.Tensor]:
        """Every rank's values (in rank order), ``{field: (n, ...) tensor}``."""
        return self._as_dict(self.get_buffer())

    def local(self) -> dict[str, torch.Tensor]:
        """This rank's values, without communication."""
        if self._buffers is None:
            return {}
        return self._as_dict([torch.stack(b, dim=0) for b in self._buffers])

    def _as_dict(self, buffers: Any) -> dict[str, torch.Tensor]:
        if buffers is None:
            return {}
        buffers = buffers if isinstance(buffers, list) else [buffers]
        return dict(zip(self.fields, buffers))


def _pad(values: Sequence[float], length: int, fill: float) -> list[float]:
    return list(values) + [fill] * (length - len(values))


@dataclass
class AttackTally:
    """Counts and times of one (attack, ε) over the run: samples attacked, wall and CPU seconds, batches; for a
    minimisation attack, the success after each step of its search (``attack.last_progress``), summed over samples."""

    n_attacked: int = 0
    time_s: float = 0.0
    cpu_time_s: float = 0.0
    batches: int = 0
    progress_sum: list[float] = field(default_factory=list)
    progress_n: int = 0

    def add_progress(self, fractions: Sequence[float], n: int) -> None:
        """Adds one call's per-step success fractions on ``n`` samples (a search that ended early keeps its last)."""
        if not fractions or n == 0:
            return
        steps = max(len(fractions), len(self.progress_sum))
        old = _pad(self.progress_sum, steps, self.progress_sum[-1] if self.progress_sum else 0.0)
        new = _pad([f * n for f in fractions], steps, fractions[-1] * n)
        self.progress_sum = [a + b for a, b in zip(old, new)]
        self.progress_n += n

    def success_by_step(self) -> list[float]:
        """The fraction of attacked samples with an adversarial found after each step of the search."""
        return [v / self.progress_n for v in self.progress_sum] if self.progress_n else []

    def add_time(self, start: tuple[float, float], share: float = 1.0) -> None:
        """Adds ``share`` of the wall and process-CPU seconds since ``start`` (from :func:`clock`)."""
        wall, cpu = clock()
        self.time_s += (wall - start[0]) * share
        self.cpu_time_s += (cpu - start[1]) * share

    def merge(self, other: AttackTally) -> None:
        """Adds another rank's counts and times."""
        self.n_attacked += other.n_attacked
        self.time_s += other.time_s
        self.cpu_time_s += other.cpu_time_s
        self.batches += other.batches
        if other.progress_n:
            self.add_progress([v / other.progress_n for v in other.progress_sum], other.progress_n)


def gather_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's small run record (counts, failures, errors, which stores hold data), in rank order: one
    ``all_gather_object``; ``[record]`` without ``torch.distributed``.

    Example::

        >>> gather_records({"keys": [("pgd", 0.01)]})
        [{'keys': [('pgd', 0.01)]}]
    """
    if not distributed():
        return [record]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, record)
    return parts


def merge_records(parts: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Merges the records of :func:`gather_records` (``{"keys", "clean", "tallies", "failed", "errors",
    "num_classes"}`` per rank; ``failed`` one dict per attack of ``names``): the failures of each attack (any
    rank's), the errors (once each), the number of classes, and the tallies summed over ranks of the keys that every
    rank filled and no rank failed (first-seen order, the same on every rank); a key some rank lacks is left out
    with an error.

    Raises:
        RuntimeError: When a rank evaluated no batch.
    """
    if not all(p["clean"] for p in parts):
        raise RuntimeError("a rank evaluated no batch: give every rank a non-empty shard of the test set.")
    failed: list[dict[Hashable, str]] = [{} for _ in names]
    for part in parts:
        for i in range(len(names)):
            for eps, msg in part["failed"][i].items():
                failed[i].setdefault(eps, msg)
    failed_keys = {(name, eps) for name, f in zip(names, failed) for eps in f}
    errors: list[dict[str, Any]] = []
    for part in parts:
        errors += [e for e in part["errors"] if e not in errors]
    seen = list(dict.fromkeys(k for p in parts for k in p["keys"]))
    tallies: dict[Hashable, AttackTally] = {}
    for key in seen:
        if key in failed_keys:
            continue
        if not all(key in p["keys"] for p in parts):
            errors.append({"where": key_label(*key), "error": "not evaluated on every rank: left out of the results"})
            continue
        tallies[key] = AttackTally()
        for part in parts:
            tallies[key].merge(part["tallies"][key])
    num_classes = next((p["num_classes"] for p in parts if p["num_classes"] is not None), None)
    return {"failed": failed, "errors": errors, "num_classes": num_classes, "tallies": tallies}
