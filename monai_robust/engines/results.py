# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The results schema of :class:`~monai_robust.engines.evaluator.RobustnessEvaluator`: per-sample values in, the
JSON-ready dict out (clinical metrics clean and per (attack, ε) with balanced accuracy, macro AUC and its ``n``, 95 %
intervals, prediction histogram and collapse flag; attack success with its interval; performance retained on
balanced accuracy and AUC above chance; perceptibility; UAP fooling rates; detector AUC with ``n`` beside the
1 - max softmax baseline; a guard's false-positive rate on the clean test images), and its flat
``engine.state.metrics`` view.

Keys are ``(name, eps)`` tuples with ``eps`` a float in model-input units (``inf``: a minimisation attack without
budget); strings are made from them for display only (:func:`~monai_robust.report.table.key_label`), never parsed.

``results`` layout::

    {"meta", "clean", "attacks": {name: {"attack", "kind", "lp", "bounds", "reference", "black_box", "uses_black_box",
     "standard_suite", "budget", "single_run", "status", "results": [row per eps], "success_by_step"?}}, "controls": {"noise": [row]},
     "uaps": {name: {"eps", "lp", "zeta", "target", "perturbed", "control"}}, "detector", "probes", "validity",
     "errors"}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import compute_roc_auc

from monai_robust.attacks.autoattack import AutoAttack
from monai_robust.engines.accumulate import AttackTally
from monai_robust.engines.budget import attack_budget
from monai_robust.metrics.clinical import clinical_metrics
from monai_robust.metrics.detection import detection_summary
from monai_robust.metrics.intervals import binomial_interval
from monai_robust.metrics.perceptibility import summarize
from monai_robust.metrics.robustness import (
    attack_success_rate,
    fooling_rate,
    retained,
    targeted_success_rate,
    to_class_predictions,
)
from monai_robust.metrics.universal import per_class_fooling_rate
from monai_robust.report.table import key_label
from monai_robust.utils.intensity import LinearIntensityMap

__all__ = [
    "CLEAN_FIELDS",
    "SAMPLE_FIELDS",
    "ResultContext",
    "build_results",
    "detector_stats",
    "flatten_metrics",
    "guard_stats",
]

SAMPLE_FIELDS = ("logits", "norm", "linf", "l2", "psnr", "ssim", "score", "out_of_bounds")
"""Per-sample values kept for each (attack, ε), UAP and control."""
CLEAN_FIELDS = ("logits", "labels", "score")
"""Per-sample values of the clean pass."""

_HEADLINE = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")


def _rate_interval(hits: torch.Tensor, trials: torch.Tensor) -> list[float]:
    """Exact 95 % interval of ``hits.sum() / trials.sum()`` (``nan`` without trials)."""
    n = int(trials.sum())
    return list(binomial_interval(int((hits & trials).sum()), n)) if n else [math.nan, math.nan]


def detector_stats(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    clean_logits: torch.Tensor | None = None,
    adversarial_logits: torch.Tensor | None = None,
    bins: int = 20,
) -> dict[str, Any]:
    """ROC AUC of clean (0) vs adversarial (1) detector scores, with ``n`` of each, shared-bin histograms and, given
    the classifier's logits on the same images, the AUC's 95 % interval beside the 1 - max softmax baseline's
    (:func:`~monai_robust.metrics.detection.detection_summary`: ``interval``, ``baseline``, ``difference_interval``,
    ``verdict``).

    Example::

        >>> detector_stats(torch.tensor([0.1, 0.2]), torch.tensor([0.9]))["auc"]
        1.0
    """
    out: dict[str, Any] = {"n_clean": int(clean.numel()), "n_adversarial": int(adversarial.numel()), "auc": math.nan}
    if clean.numel() and adversarial.numel():
        scores = torch.cat([clean, adversarial])
        target = torch.cat([torch.zeros(clean.numel()), torch.ones(adversarial.numel())])
        out["auc"] = float(compute_roc_auc(scores, target))
        lo, hi = float(scores.min()), float(scores.max())
        hi = hi if hi > lo else lo + 1.0
        out["histogram"] = {
            "edges": torch.linspace(lo, hi, bins + 1).tolist(),
            "clean": torch.histc(clean, bins, lo, hi).long().tolist(),
            "adversarial": torch.histc(adversarial, bins, lo, hi).long().tolist(),
        }
    if clean_logits is not None and adversarial_logits is not None:
        summary = detection_summary(clean.cpu(), adversarial.cpu(), clean_logits.cpu(), adversarial_logits.cpu())
        out.update({k: summary[k] for k in ("interval", "baseline", "difference_interval", "verdict", "note")})
    return out


def guard_stats(guard: Any, clean_scores: torch.Tensor) -> dict[str, Any]:
    """A calibrated guard's false-positive rate measured on the clean test images, with its exact 95 % interval,
    beside the calibration evidence (:meth:`~monai_robust.detectors.guard.DetectorGuard.calibration_report`).

    Args:
        guard: anything with ``threshold`` and ``calibration_report()`` (a ``DetectorGuard``).
        clean_scores: ``(N,)`` its detector's finite scores on the clean test images (not used to calibrate it).

    Returns:
        The calibration report plus ``"held_out": {"fpr", "n", "false_positives", "interval", "within_range"}``;
        ``within_range``: whether the interval meets the range promised for this calibration size.
    """
    report = dict(guard.calibration_report())
    flagged = clean_scores > float(guard.threshold)
    n, k = int(flagged.numel()), int(flagged.sum())
    held: dict[str, Any] = {"fpr": k / n if n else math.nan, "n": n, "false_positives": k,
                            "interval": list(binomial_interval(k, n)) if n else [math.nan, math.nan]}
    lo, hi = report.get("fpr_range", [math.nan, math.nan])
    held["within_range"] = bool(n and held["interval"][0] <= hi and lo <= held["interval"][1])
    report["held_out"] = held
    return report


@dataclass
class ResultContext:
    """The clean pass and the reporting settings every row is computed against.

    Args:
        clean: ``{"logits", "labels", "score"}`` per-sample clean values (:data:`CLEAN_FIELDS`).
        class_names: a name per class, or ``None``.
        positive_class: the class whose sensitivity is reported for a binary task.
        intensity_map: for perturbation sizes in physical units, or ``None``.
        with_detector: whether detector scores were computed.
        guard: the calibrated guard whose detector gave the scores, or ``None``.
    """

    clean: dict[str, torch.Tensor]
    class_names: list[str] | None
    positive_class: int
    intensity_map: LinearIntensityMap | None
    with_detector: bool
    guard: Any = None

    def __post_init__(self) -> None:
        self.metrics = clinical_metrics(self.clean["logits"], self.clean["labels"], self.class_names, self.positive_class)
        self.correct = to_class_predictions(self.clean["logits"]) == self.clean["labels"]

    def _clean_part(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.clean
        return c["labels"][:n], c["logits"][:n], c["score"][:n], self.correct[:n]

    def _retained(self, m: dict[str, Any]) -> dict[str, float]:
        """Balanced accuracy and AUC retained above chance, and the plain accuracy ratio
        (:func:`~monai_robust.metrics.robustness.retained`)."""
        return retained(m, self.metrics, max(1, int(self.metrics.get("classes_present", 2))))

    def guard_report(self) -> dict[str, Any] | None:
        """:func:`guard_stats` on the clean test scores, or ``None`` without a guard."""
        if self.guard is None:
            return None
        s = self.clean["score"]
        return guard_stats(self.guard, s[torch.isfinite(s)].cpu())

    def _detector(self, v: dict[str, torch.Tensor], chosen: torch.Tensor) -> dict[str, Any]:
        cs, cl = self.clean["score"][: v["logits"].shape[0]], self.clean["logits"][: v["logits"].shape[0]]
        keep_c, keep_a = torch.isfinite(cs), chosen & torch.isfinite(v["score"])
        return detector_stats(cs[keep_c], v["score"][keep_a], cl[keep_c], v["logits"][keep_a])

    def perceptibility(self, v: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, Any]:
        """Perturbation sizes (model and physical units), PSNR and SSIM over the samples in ``mask``."""
        out = {"linf": summarize(v["linf"][mask]), "l2": summarize(v["l2"][mask])}
        if self.intensity_map is not None:
            scale = 1.0 / abs(self.intensity_map.slope)
            out["linf_physical"] = summarize(v["linf"][mask] * scale)
            out["l2_physical"] = summarize(v["l2"][mask] * scale)
            out["units"] = self.intensity_map.units
        out["psnr_db"] = summarize(v["psnr"][mask])
        out["ssim"] = summarize(v["ssim"][mask])
        return out

    def attack_row(self, v: dict[str, torch.Tensor], tally: AttackTally, eps: float, light: bool = False) -> dict[str, Any]:
        """The row of one attack (or noise control, ``light``) at one ε."""
        n = v["logits"].shape[0]
        y, cl, _, ok = self._clean_part(n)
        m = clinical_metrics(v["logits"], y, self.class_names, self.positive_class)
        success = ok & (to_class_predictions(v["logits"]) != y)
        row: dict[str, Any] = {"eps": eps, "status": "ok", **m}
        if math.isfinite(eps) and self.intensity_map is not None:
            row["eps_physical"] = self.intensity_map.eps_to_physical(eps)
        row["attack_success_rate"] = attack_success_rate(cl, v["logits"], y)
        row["intervals"]["attack_success_rate"] = _rate_interval(success, ok)
        row["performance_retained"] = self._retained(m)
        row.update(n_attacked=tally.n_attacked, time_s=tally.time_s, cpu_time_s=tally.cpu_time_s)
        if light:
            return row
        row["perceptibility"] = self.perceptibility(v, success)
        finite_norm = v["norm"][torch.isfinite(v["norm"])]
        row["max_norm"] = float(finite_norm.max()) if finite_norm.numel() else math.nan
        row["out_of_bounds"] = int(v["out_of_bounds"].sum())
        if self.with_detector:
            row["detector"] = self._detector(v, success)
        return row

    def uap_row(self, v: dict[str, torch.Tensor], target: int | None) -> dict[str, Any]:
        """The row of a universal perturbation (or its random control)."""
        n = v["logits"].shape[0]
        y, cl, _, _ = self._clean_part(n)
        m = clinical_metrics(v["logits"], y, self.class_names, self.positive_class)
        changed = to_class_predictions(v["logits"]) != to_class_predictions(cl)
        row: dict[str, Any] = {"status": "ok", **m}
        row["fooling_rate"] = fooling_rate(cl, v["logits"])
        row["intervals"]["fooling_rate"] = _rate_interval(changed, torch.ones_like(changed))
        row["per_class_fooling_rate"] = {
            (self.class_names[k] if self.class_names else str(k)): r
            for k, r in per_class_fooling_rate(cl, v["logits"], y).items()
        }
        if target is not None:
            row["targeted_success_rate"] = targeted_success_rate(v["logits"], int(target))
        row["attack_success_rate"] = attack_success_rate(cl, v["logits"], y)
        row["intervals"]["attack_success_rate"] = _rate_interval(changed & (to_class_predictions(cl) == y), self.correct[:n])
        row["performance_retained"] = self._retained(m)
        row["perceptibility"] = self.perceptibility(v, changed)
        if self.with_detector:
            row["detector"] = self._detector(v, changed)
        return row


def attack_entry(
    plan: Any, rows: Sequence[dict[str, Any]], progress: AttackTally | None
) -> dict[str, Any]:
    """The ``results["attacks"][name]`` entry of one plan (an :class:`~monai_robust.engines.plans.AttackPlan`)."""
    status = "ok" if all(r["status"] == "ok" for r in rows) else ("failed" if plan.failed else "partial")
    entry = {
        "attack": plan.description,
        "kind": plan.kind,
        "lp": plan.lp.value,
        "bounds": plan.bounds,
        "reference": plan.reference,
        "black_box": plan.attack.black_box,
        "uses_black_box": plan.attack.uses_black_box,
        "standard_suite": isinstance(plan.attack, AutoAttack),
        "budget": attack_budget(plan.attack),
        "single_run": plan.minimization,
        "status": status,
        "results": list(rows),
    }
    if plan.minimization and progress is not None and progress.progress_n:
        entry["success_by_step"] = progress.success_by_step()
    return entry


def build_results(
    ctx: ResultContext,
    plans: Sequence[Any],
    values: Callable[[tuple[str, float]], dict[str, torch.Tensor] | None],
    tallies: Mapping[tuple[str, float], AttackTally],
    noise: Mapping[tuple[str, float], str],
    uaps: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """The ``"clean"``, ``"attacks"``, ``"controls"`` and ``"uaps"`` parts of the results.

    Args:
        ctx: the clean pass and reporting settings.
        plans: the evaluator's :class:`~monai_robust.engines.plans.AttackPlan` list.
        values: ``key -> per-sample values`` (``None`` for a key without data).
        tallies: counts and times per key.
        noise: the noise-control keys and their Lp.
        uaps: the evaluator's UAP records (``eps``, ``lp``, ``zeta``, ``target``).
    """
    out: dict[str, Any] = {"clean": ctx.metrics, "attacks": {}, "controls": {"noise": []}, "uaps": {}}
    for plan in plans:
        rows = []
        for eps in plan.eps:
            v = values((plan.name, eps))
            if eps in plan.failed:
                rows.append({"eps": eps, "status": "failed", "error": plan.failed[eps]})
            elif v is None:
                rows.append({"eps": eps, "status": "not run"})
            else:
                rows.append(ctx.attack_row(v, tallies[(plan.name, eps)], eps))
        out["attacks"][plan.name] = attack_entry(plan, rows, tallies.get((plan.name, plan.eps[-1])))
    for key, lp in noise.items():
        v = values(key)
        if v is not None:
            out["controls"]["noise"].append(dict(ctx.attack_row(v, tallies[key], key[1], light=True), lp=lp))
    for name, u in uaps.items():
        parts = {}
        for part, tag in (("perturbed", f"uap:{name}"), ("control", f"uap:{name}:control")):
            v = values((tag, u["eps"]))
            if v is not None:
                parts[part] = ctx.uap_row(v, u["target"])
        if parts:
            out["uaps"][name] = {"eps": u["eps"], "lp": u["lp"].value, "zeta": u["zeta"], "target": u["target"], **parts}
    return out


def flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``engine.state.metrics`` entries: ``clean/<metric>``, ``<attack>@<eps>/<metric>``, ``uap:<name>/<metric>``
    (display names, see :func:`~monai_robust.report.table.key_label`)."""
    out = {f"clean/{k}": results["clean"][k] for k in _HEADLINE if k in results["clean"]}
    for name, a in results["attacks"].items():
        for r in a["results"]:
            if r.get("status") == "ok":
                out.update({f"{key_label(name, r['eps'])}/{k}": r[k] for k in _HEADLINE if k in r})
    for name, u in results["uaps"].items():
        for part in ("perturbed", "control"):
            tag = f"uap:{name}" + (":control" if part == "control" else "")
            out.update({f"{tag}/{k}": u[part][k] for k in _HEADLINE + ("fooling_rate",) if k in u[part]})
    return out
