# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Per-class variants of the universal-perturbation metrics (Hirano et al., BMC Med Imaging 2021): the fooling rate
and the targeted success rate of :mod:`monai_robust.metrics.robustness`, computed within each class."""

from __future__ import annotations

import torch

from monai_robust.metrics.robustness import fooling_rate, targeted_success_rate, to_class_predictions

__all__ = ["per_class_fooling_rate", "per_class_targeted_success_rate"]


def _groups(groups: torch.Tensor, n: int) -> torch.Tensor:
    g = torch.as_tensor(groups).reshape(-1).long()
    if g.shape[0] != n:
        raise ValueError(f"groups must have one class per sample (N={n}), got {g.shape[0]}.")
    return g


def per_class_fooling_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, groups: torch.Tensor) -> dict[int, float]:
    """Fooling rate within each class: for every class ``c`` in ``groups``, the fraction of its inputs whose
    prediction changes under the perturbation.

    Args:
        clean_pred: logits ``(N, C)`` or class indices ``(N,)`` on the clean inputs.
        adv_pred: the same on the perturbed inputs.
        groups: ``(N,)`` class of each input: the true label, or the clean prediction when labels are unknown.

    Returns:
        ``{class: rate}`` for the classes present in ``groups``, rates in [0, 1], keys sorted.

    Raises:
        ValueError: When sizes differ or N is 0.

    Example::

        >>> per_class_fooling_rate(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 1, 1]))
        {0: 0.5, 1: 1.0}
    """
    c, a = to_class_predictions(clean_pred), to_class_predictions(adv_pred)
    fooling_rate(c, a)  # checks sizes
    g = _groups(groups, c.shape[0])
    return {int(k): fooling_rate(c[g == k], a[g == k]) for k in torch.unique(g)}


def per_class_targeted_success_rate(adv_pred: torch.Tensor, target: int, groups: torch.Tensor) -> dict[int, float]:
    """Targeted success rate within each class: for every class ``c`` in ``groups``, the fraction of its inputs
    predicted as ``target`` after the perturbation (Hirano & Takemoto, Algorithms 2020).

    Args:
        adv_pred: logits ``(N, C)`` or class indices ``(N,)`` on the perturbed inputs.
        target: the target class.
        groups: ``(N,)`` class of each input (true label or clean prediction).

    Returns:
        ``{class: rate}`` for the classes present in ``groups``, keys sorted.

    Raises:
        ValueError: When sizes differ or N is 0.

    Example::

        >>> per_class_targeted_success_rate(torch.tensor([1, 1, 0, 1]), 1, torch.tensor([0, 0, 1, 1]))
        {0: 1.0, 1: 0.5}
    """
    a = to_class_predictions(adv_pred)
    targeted_success_rate(a, target)  # checks N > 0
    g = _groups(groups, a.shape[0])
    return {int(k): targeted_success_rate(a[g == k], target) for k in torch.unique(g)}
