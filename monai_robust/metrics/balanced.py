# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Metrics that a constant predictor cannot game: balanced accuracy (Brodersen et al. 2010, "The balanced accuracy
and its posterior distribution", ICPR) and the macro one-vs-rest ROC AUC (Hand & Till 2001 average the pairwise
AUCs; here each class against the rest, as scikit-learn's ``multi_class="ovr"``), each with the number of samples
it rests on and a seeded stratified-bootstrap interval.

Both are written once for a batch of resamples ``(B, N)`` (so the bootstrap costs one vectorised pass, not ``B``
Python calls); the point estimate is the ``B = 1`` case. The AUC is the Mann-Whitney statistic with tied scores
counted one half, the area under the empirical ROC curve with ties as diagonal segments (as MONAI's
``compute_roc_auc`` and scikit-learn's ``roc_auc_score`` compute it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_robust.metrics.intervals import percentile_interval, stratified_bootstrap_indices
from monai_robust.metrics.robustness import to_class_predictions

__all__ = ["auc_rows", "balanced_accuracy", "balanced_accuracy_rows", "bootstrap_intervals", "macro_auc"]


def _labels(labels: Any, n: int) -> torch.Tensor:
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"labels must hold N={n} class indices, got shape {tuple(torch.as_tensor(labels).shape)}.")
    if n == 0:
        raise ValueError("metrics need at least one sample, got N=0.")
    if torch.is_floating_point(y) and not bool((y == y.round()).all()):
        raise ValueError("labels must be integral class indices.")
    y = y.long()
    if bool((y < 0).any()):
        raise ValueError(f"labels must be >= 0, got {int(y.min())}.")
    return y


def balanced_accuracy_rows(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced accuracy of each row of ``(B, N)`` predicted and true class indices: the mean over the classes
    present in that row's labels of the fraction of them predicted correctly (recall).

    Args:
        pred: ``(B, N)`` predicted class indices.
        labels: ``(B, N)`` true class indices in ``[0, num_classes)``.
        num_classes: the number of classes ``C``.

    Returns:
        ``(B,)`` float64 balanced accuracies.

    Example::

        >>> balanced_accuracy_rows(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]), 2)
        tensor([0.5000], dtype=torch.float64)
    """
    b = labels.shape[0]
    counts = torch.zeros(b, num_classes, dtype=torch.float64).scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
    hits = torch.zeros(b, num_classes, dtype=torch.float64).scatter_add_(1, labels, (pred == labels).double())
    present = counts > 0
    recall = torch.where(present, hits / counts.clamp_min(1), torch.zeros_like(hits))
    return recall.sum(dim=1) / present.sum(dim=1)


def auc_rows(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """ROC AUC of each row of ``(B, N)`` scores against ``(B, N)`` positive flags (Mann-Whitney, ties = 1/2).

    Args:
        scores: ``(B, N)`` scores, higher = more likely positive.
        positive: ``(B, N)`` bool, True for the positive samples.

    Returns:
        ``(B,)`` float64 AUCs; ``nan`` for a row without positives or without negatives.

    Example::

        >>> auc_rows(torch.tensor([[0.1, 0.4, 0.35, 0.8]]), torch.tensor([[False, False, True, True]]))
        tensor([0.7500], dtype=torch.float64)
    """
    values, dense = torch.unique(scores.double(), sorted=True, return_inverse=True)  # order-preserving integer codes
    counts = torch.zeros(scores.shape[0], values.numel(), dtype=torch.float64)
    counts.scatter_add_(1, dense, torch.ones_like(dense, dtype=torch.float64))  # per row: how many of each value
    below = counts.cumsum(dim=1) - counts  # per row and value: how many scores are strictly lower
    rank = below.gather(1, dense) + (counts.gather(1, dense) + 1) / 2  # 1-based rank, ties averaged
    n_pos = positive.sum(dim=1).double()
    n_neg = positive.shape[1] - n_pos
    rank_sum = (rank * positive.double()).sum(dim=1)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, math.nan))


def balanced_accuracy(pred: Any, labels: Any, num_classes: int | None = None) -> float:
    """Balanced accuracy: the mean per-class recall over the classes present in ``labels``.

    A constant predictor scores ``1 / (number of classes present)`` whatever the class balance, unlike accuracy.
    Equal to scikit-learn's ``balanced_accuracy_score`` (which also ignores classes absent from the labels).

    Args:
        pred: logits ``(N, C)`` (argmax; one logit thresholded at 0) or predicted class indices ``(N,)``.
        labels: ``(N,)`` or ``(N, 1)`` true class indices.
        num_classes: the number of classes; default inferred from ``pred`` and ``labels``.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: When sizes differ, N is 0, or labels are not class indices.

    Example::

        >>> balanced_accuracy(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))  # accuracy 0.75
        0.5
    """
    p = to_class_predictions(pred)
    y = _labels(labels, p.shape[0])
    c = num_classes if num_classes is not None else int(max(int(p.max()), int(y.max()))) + 1
    if int(y.max()) >= c or int(p.max()) >= c:
        raise ValueError(f"class indices must be < num_classes={c}, got max label {int(y.max())}, max prediction {int(p.max())}.")
    return float(balanced_accuracy_rows(p[None], y[None], c)[0])


def _specificity_rows(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B,)`` macro one-vs-rest specificity over the classes that have negatives (``nan`` when none has)."""
    neg = torch.stack([labels != k for k in range(num_classes)], dim=-1).double()  # (B, N, C)
    true_neg = neg * torch.stack([pred != k for k in range(num_classes)], dim=-1).double()
    n_neg = neg.sum(dim=1)
    spec = true_neg.sum(dim=1) / n_neg.clamp_min(1)
    has = n_neg > 0
    return torch.where(has, spec, torch.zeros_like(spec)).sum(dim=1) / has.sum(dim=1)


def _probabilities(logits: Any) -> torch.Tensor:
    z = torch.as_tensor(logits).detach().double().cpu()
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, classes) with N > 0, got shape {tuple(z.shape)}.")
    if z.shape[1] == 1:
        p = torch.sigmoid(z)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(z, dim=1)


def _macro_rows(p: torch.Tensor, y: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """``(B,)`` macro AUC over ``classes`` of resampled probabilities ``(B, N, C)`` and labels ``(B, N)``."""
    if p.shape[-1] == 2:  # both one-vs-rest AUCs of a binary task are the same number: compute it once
        classes = [1] if 1 in classes else classes[:1]
    return torch.stack([auc_rows(p[..., k], y == k) for k in classes], dim=1).mean(dim=1)


def macro_auc(logits: Any, labels: Any) -> dict[str, Any]:
    """Macro one-vs-rest ROC AUC, with the sample counts it rests on and what it had to leave out.

    Binary tasks (two logits or a single logit ``f`` with ``p = σ(f)``): the AUC of class 1's probability, which is
    also the macro average of the two one-vs-rest AUCs. More classes: the mean of the one-vs-rest AUCs of the
    classes for which one is defined, i.e. present in ``labels`` and not the only class present. A class absent from
    ``labels`` is **left out of the average and named in** ``note``; when no AUC is defined (a single class present)
    ``auc`` is ``nan`` and ``note`` says why. Equal to scikit-learn's ``roc_auc_score(..., multi_class="ovr")`` where
    every class is present (scikit-learn raises otherwise).

    Args:
        logits: ``(N, classes)`` logits; ``classes = 1`` is a binary head.
        labels: ``(N,)`` or ``(N, 1)`` class indices.

    Returns:
        ``{"auc": float, "n": N, "n_per_class": [int, ...], "per_class": [float | nan, ...], "classes_used":
        [int, ...], "note": str}`` (``note`` is ``""`` when every class entered the average).

    Raises:
        ValueError: On shape mismatches or labels out of range.

    Example::

        >>> m = macro_auc(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1, 1]))
        >>> m["auc"], m["classes_used"], m["note"]
        (1.0, [0, 1], 'class 2 absent from the labels: macro AUC over 2 of 3 classes')
    """
    p = _probabilities(logits)
    n, c = p.shape
    y = _labels(labels, n)
    if int(y.max()) >= c:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {c} classes.")
    counts = torch.bincount(y, minlength=c)
    per_class = auc_rows(p.T, (y[None] == torch.arange(c)[:, None])).tolist()  # one row per class
    used = [k for k in range(c) if 0 < int(counts[k]) < n]
    absent = [k for k in range(c) if int(counts[k]) == 0]
    notes = []
    if len(used) == 0:
        only = [k for k in range(c) if int(counts[k]) == n]
        notes.append(f"undefined: only class {only[0]} is present in the {n} labels")
    elif absent and c > 2:
        notes.append(f"class{'es' if len(absent) > 1 else ''} {', '.join(map(str, absent))} absent from the labels: "
                     f"macro AUC over {len(used)} of {c} classes")
    auc = float(_macro_rows(p[None], y[None], used)[0]) if used else math.nan
    return {
        "auc": auc,
        "n": n,
        "n_per_class": counts.tolist(),
        "per_class": per_class,
        "classes_used": used,
        "note": "; ".join(notes),
    }


def bootstrap_intervals(
    logits: Any, labels: Any, num_samples: int = 1000, confidence: float = 0.95, seed: int = 0, chunk: int = 250
) -> dict[str, Any]:
    """Stratified-bootstrap percentile intervals of balanced accuracy and macro AUC (the classes' counts are kept
    in every resample, so both are defined on every resample where they are defined on the data).

    Args:
        logits: ``(N, classes)`` logits; ``classes = 1`` is a binary head.
        labels: ``(N,)`` class indices.
        num_samples: bootstrap resamples, > 0; default 1000.
        confidence: coverage in (0, 1); default 0.95.
        seed: the resampling seed (same seed, same interval).
        chunk: resamples evaluated at once (memory ``chunk * N * classes`` doubles).

    Returns:
        ``{"balanced_accuracy": (lo, hi), "auc": (lo, hi), "specificity": (lo, hi), "method": str}``
        (``specificity``: the macro one-vs-rest specificity over the classes with negatives); an interval is
        ``(nan, nan)`` where its statistic is undefined.

    Raises:
        ValueError: On shape mismatches, labels out of range or invalid ``num_samples``/``confidence``.

    Example::

        >>> ci = bootstrap_intervals(logits, labels, seed=0)
        >>> ci["balanced_accuracy"]  # (0.81, 0.88)
    """
    p = _probabilities(logits)
    n, c = p.shape
    y = _labels(labels, n)
    if int(y.max()) >= c:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {c} classes.")
    pred = to_class_predictions(torch.as_tensor(logits).detach().cpu())
    counts = torch.bincount(y, minlength=c)
    used = [k for k in range(c) if 0 < int(counts[k]) < n]
    idx = stratified_bootstrap_indices(y, num_samples, seed)
    ba, auc, spec = [], [], []
    for part in idx.split(chunk):
        yb, pb = y[part], pred[part]
        ba.append(balanced_accuracy_rows(pb, yb, c))
        spec.append(_specificity_rows(pb, yb, c))
        if used:
            auc.append(_macro_rows(p[part], yb, used))
    return {
        "balanced_accuracy": percentile_interval(torch.cat(ba), confidence),
        "auc": percentile_interval(torch.cat(auc), confidence) if auc else (math.nan, math.nan),
        "specificity": percentile_interval(torch.cat(spec), confidence),
        "method": f"stratified percentile bootstrap, {num_samples} resamples, seed {seed}",
    }
