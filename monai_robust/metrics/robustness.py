# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Functional robustness metrics on predictions: robust accuracy, attack success, fooling and targeted
success rates (Hirano et al. 2021), performance retained (Shi et al. 2022)."""

from __future__ import annotations

import torch

__all__ = [
    "attack_success_rate",
    "fooling_rate",
    "performance_retained",
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


def performance_retained(robust: float, clean: float) -> float:
    """Robust performance as a fraction of clean performance (Shi et al. 2022 report this ratio).

    Raises:
        ValueError: When ``clean`` is not > 0.

    Example::

        >>> performance_retained(0.81, 0.9)
        0.9
    """
    if not clean > 0:
        raise ValueError(f"clean performance must be > 0, got clean={clean!r}.")
    return round(float(robust) / float(clean), 12)
