# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Clinical classification metrics on logits: accuracy, balanced accuracy, ROC AUC (binary and one-vs-rest, with
its ``n``), sensitivity and specificity, overall and per class, computed with MONAI's ``compute_roc_auc`` and
confusion-matrix functions, with 95 % intervals, the prediction histogram and the collapse flag.

The same functions score clean and adversarial predictions, so a robust metric is the clinical metric of the
predictions on attacked inputs (Shi et al. 2022 report AUC and accuracy this way).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import compute_roc_auc
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix

from monai_robust.metrics.balanced import balanced_accuracy, bootstrap_intervals, macro_auc
from monai_robust.metrics.collapse import collapse_check, prediction_histogram
from monai_robust.metrics.intervals import binomial_interval
from monai_robust.metrics.robustness import to_class_predictions

__all__ = ["class_probabilities", "clinical_metrics", "roc_auc", "sensitivity_specificity"]


def _as_logits(logits: Any) -> torch.Tensor:
    z = torch.as_tensor(logits).detach().float().cpu()
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, classes) with N > 0, got shape {tuple(z.shape)}.")
    return z


def _as_labels(labels: Any, n: int, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"labels must be (N,) class indices with N={n}, got shape {tuple(torch.as_tensor(labels).shape)}.")
    if torch.is_floating_point(y) and not bool((y == y.round()).all()):
        raise ValueError("labels must be integral class indices.")
    y = y.long()
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.numel():
        raise ValueError(f"label {int(bad[0])} is out of range for a model with {num_classes} classes.")
    return y


def _num_classes(z: torch.Tensor) -> int:
    return 2 if z.shape[1] == 1 else int(z.shape[1])


def class_probabilities(logits: Any) -> torch.Tensor:
    """Class probabilities ``(N, classes)`` from logits: softmax, or ``[1 - σ(f), σ(f)]`` for a single logit.

    Args:
        logits: ``(N, classes)`` logits; ``classes = 1`` is a binary head thresholded at 0.

    Returns:
        ``(N, max(classes, 2))`` float tensor on the CPU, rows summing to 1.

    Raises:
        ValueError: When ``logits`` is not ``(N, classes)`` with N > 0.

    Example::

        >>> class_probabilities(torch.tensor([[0.0]]))
        tensor([[0.5000, 0.5000]])
    """
    z = _as_logits(logits)
    if z.shape[1] == 1:
        p = torch.sigmoid(z)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(z, dim=1)


def roc_auc(logits: Any, labels: Any) -> dict[str, Any]:
    """ROC AUC with MONAI's ``compute_roc_auc``: binary (the positive class is 1) or one-vs-rest per class.

    Args:
        logits: ``(N, classes)`` logits (``classes = 1``: binary head).
        labels: ``(N,)`` or ``(N, 1)`` class indices.

    Returns:
        ``{"auc": float, "per_class": [float, ...]}``; ``auc`` is the positive-class AUC for two classes and the
        macro average of the one-vs-rest AUCs otherwise. A class absent from ``labels`` (or the only one present)
        gives ``nan``.

    Raises:
        ValueError: On shape or range mismatches between ``logits`` and ``labels``.

    Example::

        >>> roc_auc(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))["auc"]
        1.0
    """
    z = _as_logits(logits)
    c = _num_classes(z)
    y = _as_labels(labels, z.shape[0], c)
    p = class_probabilities(z)
    onehot = F.one_hot(y, c).float()
    per_class = []
    for k in range(c):  # one AUC per class: a handful of classes, not a per-sample loop
        pos = int(onehot[:, k].sum())
        if pos == 0 or pos == y.shape[0]:
            per_class.append(math.nan)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_class.append(float(compute_roc_auc(p[:, k], onehot[:, k])))
    finite = [a for a in per_class if not math.isnan(a)]
    if c == 2:
        auc = per_class[1]
    else:
        auc = float(sum(finite) / len(finite)) if finite else math.nan
    return {"auc": auc, "per_class": per_class}


def sensitivity_specificity(logits: Any, labels: Any) -> dict[str, list[float]]:
    """Per-class sensitivity (recall) and specificity, one-vs-rest, from MONAI's confusion-matrix functions.

    Args:
        logits: ``(N, classes)`` logits, or ``(N,)`` predicted class indices with ``num_classes`` inferred from
            the labels and predictions.
        labels: ``(N,)`` class indices.

    Returns:
        ``{"sensitivity": [...], "specificity": [...]}``, one value per class (``nan`` when undefined).

    Raises:
        ValueError: On shape or range mismatches.

    Example::

        >>> sensitivity_specificity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))["sensitivity"]
        [0.5, nan]
    """
    z = _as_logits(logits)
    c = _num_classes(z)
    y = _as_labels(labels, z.shape[0], c)
    pred = to_class_predictions(z)
    cm = get_confusion_matrix(F.one_hot(pred, c).float(), F.one_hot(y, c).float()).sum(dim=0)  # (C, [tp fp tn fn])
    sens = compute_confusion_matrix_metric("sensitivity", cm)
    spec = compute_confusion_matrix_metric("specificity", cm)
    return {"sensitivity": [float(v) for v in sens], "specificity": [float(v) for v in spec]}


def clinical_metrics(
    logits: Any,
    labels: Any,
    class_names: Sequence[str] | None = None,
    positive_class: int = 1,
    *,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    collapse_threshold: float = 0.9,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC (with its ``n``), sensitivity and specificity, overall and per class,
    with 95 % intervals, the prediction histogram and the collapse flag, of one set of predictions.

    For two classes, ``sensitivity`` and ``specificity`` are those of ``positive_class`` (the disease, by MONAI
    and MedMNIST convention class 1); for more classes they are macro averages of the one-vs-rest values.

    Intervals: exact (Clopper-Pearson) binomial intervals for accuracy and, for two classes, sensitivity and
    specificity; a seeded stratified percentile bootstrap (:mod:`monai_robust.metrics.balanced`) for balanced
    accuracy, macro AUC and, for more classes, the macro sensitivity (= balanced accuracy) and specificity.

    Args:
        logits: ``(N, classes)`` logits (``classes = 1``: binary head thresholded at 0).
        labels: ``(N,)`` or ``(N, 1)`` class indices.
        class_names: a name per class for ``per_class`` keys; default ``"0"``, ``"1"``, ...
        positive_class: the class whose sensitivity is reported for a binary task.
        num_bootstrap: bootstrap resamples for the intervals (0: no bootstrap intervals, reported as ``nan``).
        confidence: the intervals' coverage, in (0, 1); default 0.95.
        seed: the bootstrap's seed.
        collapse_threshold: the fraction of one predicted class that flags a collapse
            (:func:`~monai_robust.metrics.collapse.collapse_check`).

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "auc", "auc_n", "auc_note", "sensitivity", "specificity",
        "classes_present", "prediction_histogram": {name: count}, "collapse": {...}, "intervals": {"confidence",
        "accuracy": [lo, hi], "balanced_accuracy", "auc", "sensitivity", "specificity", "method"}, "per_class":
        {name: {"n", "auc", "sensitivity", "specificity"}}}``; undefined values are ``nan`` (``auc_note`` says why
        for the AUC).

    Raises:
        ValueError: On shape or range mismatches, or ``class_names`` of the wrong length.

    Example::

        >>> m = clinical_metrics(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
        >>> round(m["accuracy"], 3), m["auc"], m["sensitivity"], m["specificity"]
        (0.667, 1.0, 0.5, 1.0)
    """
    z = _as_logits(logits)
    c = _num_classes(z)
    y = _as_labels(labels, z.shape[0], c)
    names = [str(k) for k in range(c)] if class_names is None else [str(s) for s in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names for a model with {c} classes: {list(names)!r}.")
    if not 0 <= positive_class < c:
        raise ValueError(f"positive_class={positive_class!r} is out of range for {c} classes.")
    pred = to_class_predictions(z)
    auc = roc_auc(z, y)
    ss = sensitivity_specificity(z, y)
    counts = torch.bincount(y, minlength=c)
    per_class = {
        names[k]: {
            "n": int(counts[k]),
            "auc": auc["per_class"][k],
            "sensitivity": ss["sensitivity"][k],
            "specificity": ss["specificity"][k],
        }
        for k in range(c)
    }

    def _mean(vals: list[float]) -> float:
        finite = [v for v in vals if not math.isnan(v)]
        return float(sum(finite) / len(finite)) if finite else math.nan

    if c == 2:
        sens, spec = ss["sensitivity"][positive_class], ss["specificity"][positive_class]
    else:
        sens, spec = _mean(ss["sensitivity"]), _mean(ss["specificity"])
    n = int(y.shape[0])
    correct = int((pred == y).sum())
    macro = macro_auc(z, y)
    present = sum(int(v) > 0 for v in counts)
    intervals: dict[str, Any] = {"confidence": confidence, "accuracy": list(binomial_interval(correct, n, confidence))}
    boot = (
        bootstrap_intervals(z, y, num_bootstrap, confidence, seed)
        if num_bootstrap
        else {"balanced_accuracy": (math.nan, math.nan), "auc": (math.nan, math.nan), "specificity": (math.nan, math.nan),
              "method": "no bootstrap"}
    )
    intervals["balanced_accuracy"], intervals["auc"] = list(boot["balanced_accuracy"]), list(boot["auc"])
    if c == 2:
        intervals["sensitivity"] = _count_interval(pred, y, positive_class, confidence, positive=True)
        intervals["specificity"] = _count_interval(pred, y, positive_class, confidence, positive=False)
    else:
        intervals["sensitivity"], intervals["specificity"] = list(boot["balanced_accuracy"]), list(boot["specificity"])
    intervals["method"] = f"rates: exact Clopper-Pearson; balanced accuracy and AUC: {boot['method']}"
    return {
        "n": n,
        "accuracy": correct / n,
        "balanced_accuracy": balanced_accuracy(pred, y, c),
        "auc": auc["auc"],
        "auc_n": macro["n"],
        "auc_note": macro["note"],
        "sensitivity": sens,
        "specificity": spec,
        "classes_present": present,
        "prediction_histogram": dict(zip(names, prediction_histogram(pred, c))),
        "collapse": collapse_check(pred, y, c, collapse_threshold, names),
        "intervals": intervals,
        "per_class": per_class,
    }


def _count_interval(pred: torch.Tensor, y: torch.Tensor, k: int, confidence: float, positive: bool) -> list[float]:
    """Exact interval of class ``k``'s sensitivity (``positive``) or specificity; ``nan`` when undefined."""
    member = (y == k) if positive else (y != k)
    hit = member & ((pred == k) if positive else (pred != k))
    m = int(member.sum())
    return list(binomial_interval(int(hit.sum()), m, confidence)) if m else [math.nan, math.nan]
