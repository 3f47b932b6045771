# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The adversarial examples a detector guard is fitted on: successful attacks on the correctly classified fitting
images, with the budget raised along a small ladder until enough of them are broken."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks import eval_mode
from torch import nn

from monai_robust.attacks.base import BoundedAttack
from monai_robust.attacks.uap_sources import split_batch
from monai_robust.metrics.robustness import to_class_predictions

__all__ = ["AdversarialSet", "collect_adversarials"]

logger = logging.getLogger(__name__)


@dataclass
class AdversarialSet:
    """Clean fitting images and the successful adversarials found among them.

    Attributes:
        clean: every fitting image, ``(N, C, *spatial)``.
        adversarial: the successful adversarial images, ``(M, C, *spatial)`` (prediction changed).
        eps: the budget each adversarial was found at, ``(M,)`` (``nan`` for an attack called without ``eps``).
        n_correct: fitting images the network classified correctly (the ones attacked).
        attacked: ``{eps: images attacked at that rung}``, in the order tried.
        batch_size: images per attack call (also the chunk size of :meth:`batches`' default).
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    eps: torch.Tensor
    n_correct: int
    attacked: dict[float, int] = field(default_factory=dict)
    batch_size: int = 1

    def batches(self, which: str) -> list[torch.Tensor]:
        """``clean`` or ``adversarial`` in chunks of ``batch_size`` (for a detector's ``fit``)."""
        data = getattr(self, which)
        return [data[i : i + self.batch_size] for i in range(0, data.shape[0], self.batch_size)]


def _ladder(attack: Callable, eps_ladder: Sequence[float] | None) -> list[float | None]:
    if eps_ladder is None:
        return [None]
    rungs = [float(e) for e in eps_ladder]
    if not rungs or any(not (e > 0) for e in rungs) or rungs != sorted(set(rungs)):
        raise ValueError(f"eps_ladder must be increasing budgets > 0, got eps_ladder={list(eps_ladder)!r}.")
    if not isinstance(attack, BoundedAttack):
        raise ValueError(
            f"eps_ladder needs a bounded attack (eps at the call, e.g. PGD), got {type(attack).__name__}."
        )
    return rungs


def collect_adversarials(
    network: nn.Module,
    attack: Callable[..., torch.Tensor],
    fit_data: Iterable[Any],
    device: torch.device,
    *,
    eps_ladder: Sequence[float] | None = None,
    min_adversarial: int = 1,
    batch_size: int | None = None,
) -> AdversarialSet:
    """Attacks the correctly classified images of ``fit_data`` and keeps the successful adversarials.

    The rule (Ma et al. 2021 and Feinman et al. 2017 fit on successful adversarials only): one clean forward per
    image; only images the network classifies correctly are attacked (an attack on a misclassified image has
    nothing to change); a :class:`~monai_robust.attacks.base.BoundedAttack` is called with ``early_stop=True``, so an
    image stops costing gradient steps once it is broken. With ``eps_ladder``, the budgets are tried in increasing
    order, each on the images not broken at the smaller ones, and the ladder stops at the first budget after which
    at least ``min_adversarial`` adversarials were found (or at its top). Without it, the attack runs once at its own
    budget.

    Args:
        network: the classifier the guard watches (predictions decide success: the prediction changed).
        attack: a callable ``(images, labels) -> adversarial images``; a bounded attack for ``eps_ladder``.
        fit_data: batches (MONAI dictionaries with ``"image"`` and ``"label"``, ``(image, label)`` pairs, or images
            alone: their labels are then the network's predictions).
        device: where to run.
        eps_ladder: increasing budgets in model-input units; ``None``: the attack's own budget only.
        min_adversarial: stop raising the budget once this many adversarials were found (>= 1).
        batch_size: images per attack call; default the size of the first batch of ``fit_data``.

    Returns:
        An :class:`AdversarialSet` (possibly with no adversarial: the caller decides what that means).

    Raises:
        ValueError: When ``eps_ladder`` is not increasing positive budgets or the attack is not bounded, or
            ``min_adversarial`` / ``batch_size`` is not a positive integer.

    Example::

        >>> found = collect_adversarials(net, PGD(net, num_steps=10, bounds=(0, 1)), loader, torch.device("cpu"),
        ...                              eps_ladder=[2 / 255, 4 / 255, 8 / 255], min_adversarial=16)
        >>> found.adversarial.shape[0], found.eps.unique()
    """
    for name, value in (("min_adversarial", min_adversarial), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}.")
    rungs = _ladder(attack, eps_ladder)
    images, labels, preds = [], [], []
    for batch in fit_data:
        x, y = split_batch(batch, "guard data")
        x = x.to(device).float().detach()
        with eval_mode(network), torch.no_grad():
            pred = to_class_predictions(network(x))
        images.append(x)
        preds.append(pred)
        labels.append(pred if y is None else y.to(device).long().reshape(pred.shape))
        batch_size = batch_size or x.shape[0]
    if not images:
        return AdversarialSet(torch.empty(0), torch.empty(0), torch.empty(0), 0)
    clean, label, pred = torch.cat(images), torch.cat(labels), torch.cat(preds)
    todo = (pred == label).nonzero().reshape(-1)
    n_correct = int(todo.numel())
    found: list[torch.Tensor] = []
    found_eps: list[torch.Tensor] = []
    attacked: dict[float, int] = {}
    for eps in rungs:
        if todo.numel() == 0:
            break
        attacked[float("nan") if eps is None else eps] = int(todo.numel())
        broken = torch.zeros(todo.numel(), dtype=torch.bool, device=todo.device)
        for start in range(0, todo.numel(), batch_size):
            idx = todo[start : start + batch_size]
            kwargs = {"early_stop": True} if isinstance(attack, BoundedAttack) else {}
            if eps is not None:
                kwargs["eps"] = eps
            adv = attack(clean[idx], label[idx], **kwargs).detach()
            with eval_mode(network), torch.no_grad():
                fooled = to_class_predictions(network(adv)) != pred[idx]
            found.append(adv[fooled])
            found_eps.append(torch.full((int(fooled.sum()),), float("nan") if eps is None else eps))
            broken[start : start + batch_size] = fooled
        todo = todo[~broken]
        n_found = sum(a.shape[0] for a in found)
        logger.info("guard fitting: eps %s broke %d of %d correct images (%d in all)",
                    eps, int(broken.sum()), int(broken.numel()), n_found)
        if n_found >= min_adversarial:
            break
    adversarial = torch.cat(found) if found else clean[:0]
    eps_found = torch.cat(found_eps) if found_eps else torch.empty(0)
    return AdversarialSet(clean, adversarial, eps_found, n_correct, attacked, batch_size)
