# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Functional robustness metrics on predictions: robust accuracy, attack success, fooling and targeted
success rates (Hirano et al. 2021), performance retained (Shi et al. 2022; here also above chance, on balanced
accuracy and AUC)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "attack_success_rate",
    "fooling_rate",
    "performance_retained",
    "retained",
    "robust_accuracy",
    "targeted_success_rate",
    "to_class_predictions",
]


def to_class_predictions(pred: torch.Tensor) -> torch.Tensor:
    """Class indices ``(N,)`` from logits ``(N, C)`` (argmax; one logit thresholded at 0) or from indices.

    Example::

        >>> to_class_predictions(torch.tensor([[0.1, 2.0], [3.0, 0.0]]))
        tensor([1, 0])
    """
    pred = torch.as_tensor(pred)
    if pred.ndim == 2 and pred.shape[1] > 1:
        return pred.argmax(dim=1)
    if pred.ndim == 2 and torch.is_floating_point(pred):
        return (pred[:, 0] > 0).long()
    return pred.reshape(-1).long()


def _check_same_n(**tensors: torch.Tensor) -> None:
    ns = {k: int(v.shape[0]) for k, v in tensors.items()}
    if len(set(ns.values())) != 1:
        raise ValueError(f"inputs must have the same number of samples, got {ns}.")
    if next(iter(ns.values())) == 0:
        raise ValueError("metrics need at least one sample, got N=0.")


def robust_accuracy(adv_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on adversarial inputs: fraction with ``prediction == label``.

    Args:
        adv_pred: logits ``(N, C)`` or class indices ``(N,)`` on the adversarial inputs.
        labels: true class indices ``(N,)`` or ``(N, 1)``.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: When sizes differ or N is 0.

    Example::

        >>> robust_accuracy(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1]))
        0.6666666865348816
    """
    p, y = to_class_predictions(adv_pred), torch.as_tensor(labels).reshape(-1).long()
    _check_same_n(adv_pred=p, labels=y)
    return float((p == y).float().mean())


def attack_success_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Among inputs classified correctly when clean, the fraction misclassified after the attack.

    Returns:
        A float in [0, 1] (``nan`` when no input is classified correctly).

    Example::

        >>> attack_success_rate(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), torch.tensor([1, 1, 1]))
        0.5
    """
    c, a = to_class_predictions(clean_pred), to_class_predictions(adv_pred)
    y = torch.as_tensor(labels).reshape(-1).long()
    _check_same_n(clean_pred=c, adv_pred=a, labels=y)
    correct = c == y
    if not bool(correct.any()):
        return float("nan")
    return float((a[correct] != y[correct]).float().mean())


def fooling_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """Fraction of inputs whose prediction changes under the perturbation (labels are not needed).

    Example::

        >>> fooling_rate(torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 0, 0]))
        0.5
    """
    c, a = to_class_predictions(clean_pred), to_class_predictions(adv_pred)
    _check_same_n(clean_pred=c, adv_pred=a)
    return float((c != a).float().mean())


def targeted_success_rate(adv_pred: torch.Tensor, target: int | torch.Tensor) -> float:
    """Fraction of *all* inputs predicted as the target class after the perturbation (Hirano & Takemoto 2020).

    Example::

        >>> targeted_success_rate(torch.tensor([1, 1, 0, 1]), 1)
        0.75
    """
    a = to_class_predictions(adv_pred)
    t = torch.as_tensor(target).reshape(-1).long().expand_as(a) if torch.as_tensor(target).numel() == 1 else torch.as_tensor(target).reshape(-1).long()
    _check_same_n(adv_pred=a, target=t)
    return float((a == t).float().mean())


def performance_retained(robust: float, clean: float, chance: float = 0.0) -> float:
    """The part of the clean performance above chance that survives the attack: ``(robust - chance) / (clean -
    chance)``.

    With ``chance = 0`` this is the plain ratio Shi et al. (2022) report for accuracy; it rewards a model that
    collapses to the majority class (its accuracy is the majority fraction, and no attack changes a prediction that
    ignores the input). Use it on balanced accuracy with ``chance = 1 / classes`` and on ROC AUC with ``chance =
    0.5`` (:func:`retained`): a constant predictor then retains 0, a model unchanged by the attack 1, and a value
    below 0 means the attacked model is worse than chance.

    Args:
        robust: the metric on adversarial inputs.
        clean: the same metric on clean inputs (of the reference model).
        chance: the metric's value for a model that ignores its input; default 0.

    Returns:
        The fraction retained (1 = nothing lost).

    Raises:
        ValueError: When ``clean`` is not above ``chance`` (nothing to retain).

    Example::

        >>> performance_retained(0.81, 0.9)
        0.9
        >>> performance_retained(0.5, 0.9, chance=0.5)  # a collapsed binary model's balanced accuracy
        0.0
    """
    if not clean > chance:
        raise ValueError(f"clean performance must be above chance={chance!r}, got clean={clean!r}.")
    return round((float(robust) - chance) / (float(clean) - chance), 12)


def retained(robust: Mapping[str, Any], clean: Mapping[str, Any], classes_present: int) -> dict[str, float]:
    """Performance retained on balanced accuracy and ROC AUC, above chance (see :func:`performance_retained`), and
    the plain accuracy ratio of Shi et al. (2022) for comparison with the literature.

    Args:
        robust: metrics on adversarial inputs, with ``"balanced_accuracy"``, ``"auc"`` and ``"accuracy"`` (as
            :func:`~monai_robust.metrics.clinical.clinical_metrics` returns them).
        clean: the same metrics on clean inputs.
        classes_present: the number of classes present in the test labels (chance balanced accuracy is its
            inverse).

    Returns:
        ``{"balanced_accuracy": float, "auc": float, "accuracy": float}``; ``nan`` where a metric is missing or not
        finite, or the clean value is not above chance.

    Raises:
        ValueError: When ``classes_present`` is not a positive integer.

    Example::

        >>> retained({"balanced_accuracy": 0.5, "auc": 0.6, "accuracy": 0.9},
        ...          {"balanced_accuracy": 0.9, "auc": 0.95, "accuracy": 0.92}, classes_present=2)["balanced_accuracy"]
        0.0
    """
    if isinstance(classes_present, bool) or not isinstance(classes_present, int) or classes_present < 1:
        raise ValueError(f"classes_present must be a positive integer, got classes_present={classes_present!r}.")
    chance = {"balanced_accuracy": 1.0 / classes_present, "auc": 0.5, "accuracy": 0.0}
    out = {}
    for key, floor in chance.items():
        r, c = robust.get(key), clean.get(key)
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (r, c)) and c > floor
        out[key] = performance_retained(r, c, floor) if ok else math.nan
    return out
