# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""What one run of :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` keeps: the clean pass and, per
``(name, eps)`` key, per-sample values (perceptibility, detector scores, bounds) on MONAI ``Cumulative`` stores,
counts and times, the report's example panels, and the errors met; merged over ranks when the epoch completes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from monai_robust.attacks.functional import lp_norm
from monai_robust.engines.accumulate import AttackTally, SampleStore, clock, gather_records, merge_records
from monai_robust.engines.inputs import middle_slice
from monai_robust.engines.results import CLEAN_FIELDS, SAMPLE_FIELDS
from monai_robust.metrics.perceptibility import perturbation_norms, psnr, ssim
from monai_robust.metrics.robustness import to_class_predictions
from monai_robust.report.table import key_label
from monai_robust.utils.enums import LpNorm

__all__ = ["RunRecorder"]

logger = logging.getLogger(__name__)

Key = tuple[str, float]


class RunRecorder:
    """The per-run state of an evaluation.

    Args:
        detector: ``detector(images) -> (N,)`` scores, or ``None``; after its first failure it is not called again.
        num_examples: samples of the first batch kept for example panels.
        keep_images: keep the adversarial images in the iteration output.

    Example::

        >>> rec = RunRecorder(None, num_examples=0, keep_images=False)
        >>> rec.tally(("pgd", 0.01)).n_attacked
        0
    """

    def __init__(self, detector: Callable[[torch.Tensor], Any] | None, num_examples: int, keep_images: bool) -> None:
        self.detector = detector
        self.num_examples = num_examples
        self.keep_images = keep_images
        self.clean = SampleStore(CLEAN_FIELDS)
        self.stores: dict[Key, SampleStore] = {}
        self.tallies: dict[Key, AttackTally] = {}
        self.noise: dict[Key, str] = {}  # noise-control key -> its Lp
        self.errors: list[dict[str, Any]] = []
        self.detector_error: str | None = None
        self.examples: dict[str, Any] = {}
        self.data_range: float | None = None
        self.complete = False
        self.t0 = clock()
        self._example_idx: torch.Tensor | None = None

    def tally(self, key: Key) -> AttackTally:
        """The counts and times of ``key`` (created empty)."""
        return self.tallies.setdefault(key, AttackTally())

    def error(self, where: str, e: BaseException) -> str:
        """Records an error and returns its message."""
        msg = f"{type(e).__name__}: {e}"
        self.errors.append({"where": where, "error": msg})
        return msg

    def drop(self, key: Key) -> None:
        """Forgets the values of a key whose attack failed."""
        self.stores.pop(key, None)

    def score(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """Detector scores ``(N,)`` (NaN without a detector, or once it failed: the failure is recorded once)."""
        nan = torch.full((x.shape[0],), math.nan, device=x.device)
        if self.detector is None or x.shape[0] == 0 or self.detector_error is not None:
            return nan
        try:
            with torch.no_grad():
                s = torch.as_tensor(self.detector(x)).detach().float().reshape(-1).to(x.device)
            if s.shape[0] != x.shape[0]:
                raise ValueError(f"the detector returned {s.shape[0]} scores for {x.shape[0]} images.")
            return s
        except Exception as e:  # the detector is optional: recorded, the evaluation goes on
            self.detector_error = self.error(f"detector ({where})", e)
            logger.warning("detector failed on %s: %s", where, e)
            return nan

    def keep_examples(
        self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, class_names: Sequence[str] | None
    ) -> None:
        """Keeps the first ``num_examples`` samples (correct ones first) of the first batch for example panels."""
        if self.num_examples == 0:
            return
        correct = to_class_predictions(logits) == y
        order = torch.cat([correct.nonzero().reshape(-1), (~correct).nonzero().reshape(-1)])
        idx = self._example_idx = order[: self.num_examples]
        self.examples = {
            "images": middle_slice(x[idx]),
            "labels": y[idx].cpu(),
            "clean_pred": to_class_predictions(logits[idx]).cpu(),
            "adversarial": {},
            "class_names": class_names,
            "spatial_dims": x.ndim - 2,
        }

    def record(
        self, key: Key, lp: LpNorm, bounds: tuple[float, float] | None, x: torch.Tensor, adv: torch.Tensor,
        adv_logits: torch.Tensor, success: torch.Tensor, first: bool,
    ) -> dict[str, Any]:
        """Per-sample numbers of one key on one batch (perceptibility and detector scores only where ``success``,
        NaN elsewhere); returns the iteration-output entry ``{"attack", "eps", "lp", "bounds", "pred", "image"}``."""
        n = x.shape[0]
        nan = torch.full((n,), math.nan, device=x.device)
        idx = success.nonzero().reshape(-1)
        linf, l2, ps, ss, score = nan.clone(), nan.clone(), nan.clone(), nan.clone(), nan.clone()
        if idx.numel():
            norms = perturbation_norms(x[idx], adv[idx])
            linf[idx], l2[idx] = norms["linf"], norms["l2"]
            ps[idx] = psnr(x[idx], adv[idx], self.data_range).to(x.device)
            ss[idx] = ssim(x[idx], adv[idx], self.data_range).to(x.device)
            score[idx] = self.score(adv[idx], key_label(*key))
        oob = torch.zeros(n, dtype=torch.bool, device=x.device)
        if bounds is not None:
            tol = 1e-5 * (bounds[1] - bounds[0])
            flat = adv.reshape(n, -1)
            oob = (flat.amin(dim=1) < bounds[0] - tol) | (flat.amax(dim=1) > bounds[1] + tol)
        values = dict(
            logits=adv_logits, norm=lp_norm(adv - x, lp), linf=linf, l2=l2, psnr=ps, ssim=ss, score=score, out_of_bounds=oob
        )
        self.stores.setdefault(key, SampleStore(SAMPLE_FIELDS)).add(**{k: v.float() for k, v in values.items()})
        self.tally(key).batches += 1
        info = {"attack": key[0], "eps": key[1], "lp": lp.value, "bounds": bounds}
        entry = dict(info, pred=adv_logits.clone())  # the caller updates adv/adv_logits in place at the next eps
        if self.keep_images:
            entry["image"] = adv.clone()
        if first and self._example_idx is not None:
            i = self._example_idx
            self.examples["adversarial"][key] = dict(
                info, images=middle_slice(adv[i]), pred=to_class_predictions(adv_logits[i]).cpu()
            )
        return entry

    def values(self, key: Key) -> dict[str, torch.Tensor] | None:
        """Every rank's values of ``key`` once complete (gathered by :meth:`sync`), else this rank's; ``None`` if
        the key has none."""
        store = self.stores.get(key)
        return None if store is None else (store.get() if self.complete else store.local())

    def clean_values(self) -> dict[str, torch.Tensor]:
        return self.clean.get() if self.complete else self.clean.local()

    def sync(self, plans: Sequence[Any], num_classes: int | None) -> int | None:
        """Marks the run complete and merges the ranks' records (plans' failures too); then gathers every store in
        the same order on every rank. Returns the number of classes (any rank's)."""
        self.complete = True
        record = {
            "keys": [k for k, s in self.stores.items() if s.n_local],
            "clean": self.clean.n_local > 0,
            "tallies": self.tallies,
            "failed": [dict(p.failed) for p in plans],
            "errors": self.errors,
            "num_classes": num_classes,
        }
        parts = gather_records(record)
        if len(parts) == 1:
            return num_classes
        merged = merge_records(parts, [p.name for p in plans])
        for plan, failed in zip(plans, merged["failed"]):
            plan.failed.update(failed)
        self.errors, self.tallies = merged["errors"], merged["tallies"]
        self.stores = {k: self.stores[k] for k in merged["tallies"]}
        self.clean.get()
        for store in self.stores.values():
            store.get()
        return merged["num_classes"]
