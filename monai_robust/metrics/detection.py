# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Detector comparisons (a metric on detector scores and classifier logits) that always include the bar to clear: the ``1 - max softmax`` confidence baseline
(Hendrycks & Gimpel 2017, "A baseline for detecting misclassified and out-of-distribution examples", ICLR).

Successful adversarial examples made at a small budget sit just across the decision boundary, where the classifier
is unsure, so low confidence alone often separates them from clean images; a detector is worth deploying only if
it beats that. Every AUC comes with the numbers of clean and adversarial images it rests on, a seeded
stratified-bootstrap interval, and the paired bootstrap interval of its difference from the baseline (the same
resamples for both, so the comparison is not blurred by resampling noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from monai_robust.metrics.balanced import auc_rows
from monai_robust.metrics.clinical import class_probabilities
from monai_robust.metrics.intervals import percentile_interval, stratified_bootstrap_indices

__all__ = ["BASELINE", "compare_detectors", "confidence_scores", "detection_summary"]

BASELINE = "1 - max softmax"
"""The name of the confidence baseline in :func:`compare_detectors`' results."""


def confidence_scores(logits: Any) -> torch.Tensor:
    """``1 - max softmax probability`` per image (a single-logit head ``f``: ``1 - max(σ(f), 1 - σ(f))``).

    Args:
        logits: ``(N, classes)`` logits of the classifier.

    Returns:
        ``(N,)`` scores in [0, 1 - 1/classes]; higher = less confident = more suspect.

    Raises:
        ValueError: When ``logits`` is not ``(N, classes)`` with N > 0.

    Example::

        >>> confidence_scores(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        tensor([0.5000, 0.0180])
    """
    return 1 - class_probabilities(logits).amax(dim=1)


def _scores(v: Any, name: str) -> torch.Tensor:
    s = torch.as_tensor(v).detach().double().reshape(-1).cpu()
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} has {int((~torch.isfinite(s)).sum())} non-finite scores.")
    return s


def compare_detectors(
    clean_scores: Mapping[str, Any],
    adversarial_scores: Mapping[str, Any],
    clean_logits: Any,
    adversarial_logits: Any,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """ROC AUCs of detectors separating adversarial (positive) from clean images, beside the confidence baseline.

    Args:
        clean_scores: ``{detector name: (n,) scores}`` on the clean images.
        adversarial_scores: ``{detector name: (m,) scores}`` on the adversarial images, same names (usually only
            the successful adversarial examples, as Ma et al. 2018 score detectors).
        clean_logits: ``(n, classes)`` classifier logits on the same clean images (for the baseline).
        adversarial_logits: ``(m, classes)`` logits on the same adversarial images.
        num_bootstrap: resamples for the intervals, > 0; default 1000.
        confidence: the intervals' coverage; default 0.95.
        seed: the bootstrap's seed.

    Returns:
        ``{"n_clean", "n_adversarial", "baseline": {"name", "auc", "interval"}, "detectors": {name: {"auc",
        "interval", "n_clean", "n_adversarial", "difference", "difference_interval", "verdict"}}, "summary": str,
        "method": str}``; ``verdict`` is ``"beats the baseline"`` (difference interval above 0), ``"does not beat
        the baseline"`` (AUC at or below the baseline's) or ``"within noise of the baseline"``; ``summary`` names
        every detector that does not beat it.

    Raises:
        ValueError: When the names differ, a set is empty, sizes disagree with the logits, or a score is not
            finite.

    Example::

        >>> out = compare_detectors({"lid": lid(x)}, {"lid": lid(adv)}, net(x), net(adv))
        >>> out["detectors"]["lid"]["verdict"], out["n_adversarial"]
        ('within noise of the baseline', 37)
    """
    if set(clean_scores) != set(adversarial_scores):
        raise ValueError(f"clean and adversarial scores name different detectors: {sorted(clean_scores)} vs "
                         f"{sorted(adversarial_scores)}.")
    n, m = len(torch.as_tensor(clean_logits)), len(torch.as_tensor(adversarial_logits))
    if n == 0 or m == 0:
        raise ValueError(f"an AUC needs clean and adversarial images, got {n} clean and {m} adversarial.")
    base_c, base_a = confidence_scores(clean_logits).double(), confidence_scores(adversarial_logits).double()
    names = list(clean_scores)
    cols = [torch.cat([base_c, base_a])]
    for name in names:
        c, a = _scores(clean_scores[name], f"clean_scores[{name!r}]"), _scores(adversarial_scores[name], f"adversarial_scores[{name!r}]")
        if (c.numel(), a.numel()) != (n, m):
            raise ValueError(f"detector {name!r} scored {c.numel()} clean / {a.numel()} adversarial images, the logits "
                             f"hold {n} / {m}.")
        cols.append(torch.cat([c, a]))
    is_adv = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(m, dtype=torch.long)])
    idx = stratified_bootstrap_indices(is_adv, num_samples=num_bootstrap, seed=seed)
    pos = is_adv.bool()
    point = [float(auc_rows(s[None], pos[None])[0]) for s in cols]
    boot = [auc_rows(s[idx], pos[idx]) for s in cols]
    base = {"name": BASELINE, "auc": point[0], "interval": list(percentile_interval(boot[0], confidence))}
    detectors: dict[str, Any] = {}
    losers = []
    for j, name in enumerate(names, start=1):
        diff_lo, diff_hi = percentile_interval(boot[j] - boot[0], confidence)
        diff = point[j] - point[0]
        if diff_lo > 0:
            verdict = "beats the baseline"
        elif diff <= 0:
            verdict = "does not beat the baseline"
        else:
            verdict = "within noise of the baseline"
        if diff_lo <= 0:
            losers.append(f"{name} ({point[j]:.3f} vs {point[0]:.3f})")
        detectors[name] = {
            "auc": point[j],
            "interval": list(percentile_interval(boot[j], confidence)),
            "n_clean": n,
            "n_adversarial": m,
            "difference": diff,
            "difference_interval": [diff_lo, diff_hi],
            "verdict": verdict,
        }
    summary = (f"not clearly better than {BASELINE} (AUC {point[0]:.3f}) on {n} clean / {m} adversarial images: "
               + ", ".join(losers)) if losers else (f"every detector beats {BASELINE} (AUC {point[0]:.3f}) on {n} clean "
                                                    f"/ {m} adversarial images")
    return {
        "n_clean": n,
        "n_adversarial": m,
        "baseline": base,
        "detectors": detectors,
        "summary": summary,
        "method": f"ROC AUC (adversarial = positive); stratified percentile bootstrap, {num_bootstrap} resamples, "
                  f"seed {seed}, paired for the differences",
    }



def detection_summary(
    clean_scores: Any,
    adversarial_scores: Any,
    clean_logits: Any,
    adversarial_logits: Any,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """One detector's AUC with its ``n``, interval, the baseline's AUC and the verdict; ``nan`` and a note where a
    set is empty (no successful adversarial example: no AUC).

    Args:
        clean_scores: ``(n,)`` detector scores of clean images.
        adversarial_scores: ``(m,)`` scores of adversarial images.
        clean_logits: ``(n, classes)`` classifier logits of the same clean images.
        adversarial_logits: ``(m, classes)`` logits of the same adversarial images.
        num_bootstrap: resamples for the intervals; default 1000.
        confidence: the intervals' coverage; default 0.95.
        seed: the bootstrap's seed.

    Returns:
        ``{"n_clean", "n_adversarial", "auc", "interval", "baseline": {"name", "auc", "interval"},
        "difference_interval", "verdict", "note"}``.

    Raises:
        ValueError: On size mismatches or non-finite scores.

    Example::

        >>> detection_summary(det(x), det(adv), net(x), net(adv))["verdict"]
        'beats the baseline'
    """
    n, m = len(torch.as_tensor(clean_logits)), len(torch.as_tensor(adversarial_logits))
    if n == 0 or m == 0:
        nan = float("nan")
        return {"n_clean": n, "n_adversarial": m, "auc": nan, "interval": [nan, nan],
                "baseline": {"name": BASELINE, "auc": nan, "interval": [nan, nan]}, "difference_interval": [nan, nan],
                "verdict": "", "note": f"no AUC: {n} clean and {m} adversarial images"}
    out = compare_detectors({"detector": clean_scores}, {"detector": adversarial_scores}, clean_logits,
                            adversarial_logits, num_bootstrap, confidence, seed)
    d = out["detectors"]["detector"]
    return {"n_clean": n, "n_adversarial": m, "auc": d["auc"], "interval": d["interval"], "baseline": out["baseline"],
            "difference_interval": d["difference_interval"], "verdict": d["verdict"], "note": ""}
