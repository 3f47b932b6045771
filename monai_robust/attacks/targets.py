# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The multi-target loop of AutoAttack's targeted attacks (APGD-T, FAB-T): each of the top-``k`` other classes in
turn becomes the target of the samples not yet adversarial, with restarts per target."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["attack_over_targets", "ranked_targets"]

RunFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""``run(images, labels, targets, restart) -> (points, success)`` on a subset of the batch."""


def ranked_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classes other than ``labels``, per sample, by decreasing logit: column ``r`` is the ``r``-th most
    likely wrong class, ``(N, classes - 1)``.

    At a correctly classified sample column 0 is the second-largest logit, as in Croce & Hein's code
    (``sort(logits)[:, -2]``); a class never appears twice, so no target is attacked twice.

    Args:
        logits: ``(N, classes)`` logits, at least 2 classes.
        labels: ``(N,)`` class indices.

    Returns:
        ``(N, classes - 1)`` long class indices.

    Example::

        >>> ranked_targets(torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([1]))
        tensor([[2, 0]])
    """
    masked = logits.detach().scatter(1, labels.reshape(-1, 1).long(), float("-inf"))
    return masked.argsort(dim=1, descending=True)[:, :-1]


def attack_over_targets(
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_logits: torch.Tensor,
    success: torch.Tensor,
    num_targets: int,
    num_restarts: int,
    run: RunFn,
) -> torch.Tensor:
    """Runs ``run`` on the samples not yet adversarial, for each of the top ``num_targets`` wrong classes (at most
    ``classes - 1``) and ``num_restarts`` times per target; a sample keeps the first adversarial point found.

    Args:
        images: ``(N, C, *spatial)`` clean images.
        labels: ``(N,)`` true class indices.
        clean_logits: ``(N, classes)`` logits at ``images``, which rank the targets.
        success: ``(N,)`` bool, samples already adversarial (e.g. misclassified clean); updated in place.
        num_targets: how many of the most likely wrong classes to try (>= 1).
        num_restarts: runs per target (>= 1); ``run`` gets the restart index.
        run: the attack on a subset, ``run(images, labels, targets, restart) -> (points, success)``.

    Returns:
        ``(N, C, *spatial)``: the adversarial point where one was found, else the clean image.
    """
    adv = images.clone()
    order = ranked_targets(clean_logits, labels)
    for rank in range(min(num_targets, order.shape[1])):
        for restart in range(num_restarts):
            todo = (~success).nonzero().flatten()
            if todo.numel() == 0:
                return adv
            points, ok = run(images[todo], labels[todo], order[todo, rank], restart)
            adv[todo[ok]] = points[ok]
            success[todo[ok]] = True
    return adv
