# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""APGD-T: APGD on the targeted DLR loss, once per target among the most likely wrong classes (AutoAttack's
second attack), sound for two-class and single-logit heads."""

from __future__ import annotations

from typing import Any

import torch

from monai_robust.attacks.apgd import APGD
from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.targets import attack_over_targets
from monai_robust.attacks.threat import _check_positive_int

__all__ = ["APGDT", "apgdt_loss"]

_TINY = 1e-12


def apgdt_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""The targeted DLR loss of APGD-T, per sample, to be *ascended*:
    ``(z_t - z_y) / (z_π1 - (z_π3 + z_π4) / 2)`` (Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690, Eq. 7,
    with the sign flipped so that larger is better for the attacker).

    ``z_π1 >= z_π2 >= ...`` are the sorted logits, ``y`` the true class and ``t`` the target. The normaliser makes
    the loss invariant to shifting and rescaling the logits. It needs four classes; with fewer the loss is the
    closest sound form (our choice, as the paper and the authors' code assume at least four classes):

    * 3 classes: normaliser ``z_π1 - z_π3`` (the untargeted DLR's, still shift and scale invariant);
    * 2 classes: no normaliser, the margin ``z_t - z_y``. With two logits ``z_π1 - z_π2 = |z_t - z_y|``, so the
      ratio would be ``±1`` with a zero gradient. The margin is a monotone function of cross-entropy here
      (``CE = log(1 + exp(z_t - z_y))``), so its sign-gradient is APGD-CE's, except where CE's gradient underflows
      to zero on over-confident logits; the margin never saturates.

    Args:
        logits: ``(N, classes)`` with at least 2 classes.
        labels: ``(N,)`` true class indices.
        targets: ``(N,)`` target class indices (different from ``labels``).

    Returns:
        ``(N,)`` losses (dimensionless; logit units for 2 classes); positive exactly when ``z_t > z_y``.

    Raises:
        ValueError: When ``logits`` is not ``(N, classes)`` with at least 2 classes.

    Example::

        >>> apgdt_loss(torch.tensor([[3.0, 1.0, 0.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))
        tensor([-0.6667])
        >>> apgdt_loss(torch.tensor([[3.0, 1.0]]), torch.tensor([0]), torch.tensor([1]))
        tensor([-2.])
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"apgdt_loss needs logits (N, classes) with at least 2 classes, got {tuple(logits.shape)}.")
    z_y = logits.gather(1, labels.reshape(-1, 1).long()).squeeze(1)
    z_t = logits.gather(1, targets.reshape(-1, 1).long()).squeeze(1)
    classes = logits.shape[1]
    if classes == 2:
        return z_t - z_y
    z = logits.sort(dim=1, descending=True).values
    rest = z[:, 2] if classes == 3 else 0.5 * (z[:, 2] + z[:, 3])
    return (z_t - z_y) / (z[:, 0] - rest + _TINY)


class APGDT(APGD):
    r"""APGD-T: :class:`~monai_robust.attacks.apgd.APGD` ascending the targeted DLR loss (:func:`apgdt_loss`)
    towards each of the ``num_target_classes`` most likely wrong classes in turn, on the samples not yet
    misclassified; an untargeted attack (success = the prediction leaves the true class).

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks", ICML 2020, https://arxiv.org/abs/2003.01690 (Eq. 7; AutoAttack's standard version uses
    100 iterations, 9 target classes, 1 restart each).

    Targets are ranked by the logits at the clean image (the second-largest logit first); each is tried with
    ``num_restarts`` runs of APGD (same step-size schedule, momentum and random start), each run only on the samples
    still correctly classified. Samples misclassified on the clean image are returned unchanged. With two classes
    (or a single-logit head, read as the logits ``[0, f]``) the only target is the other class and the loss the
    unnormalised margin (see :func:`apgdt_loss`): APGD-T then adds to APGD-CE a run from a new random start on a
    loss that does not saturate.

    Args:
        network: classifier returning logits ``(N, classes)`` (``classes`` >= 1; multi-label heads are refused).
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call).
        num_target_classes: how many of the most likely wrong classes to target (>= 1; at most ``classes - 1`` are
            used).
        num_steps: iterations per run (>= 1); the paper uses 100.
        num_restarts: runs per target (>= 1).
        kwargs: ``rho``, ``momentum`` as in :class:`~monai_robust.attacks.apgd.APGD`; ``lp`` (``"inf"`` or ``2``),
            ``bounds``, ``early_stop``, ``amp`` as in :class:`~monai_robust.attacks.base.Attack`.

    Raises:
        ValueError: When an argument is out of range, or ``targeted`` / ``loss`` is given (APGD-T picks its targets
            and its loss itself).

    Example::

        >>> attack = APGDT(net, eps=8 / 255, num_steps=100, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
    """

    _repr_keys = APGD._repr_keys + ("num_target_classes",)
    exact_amp = amp_by_default = False  # (true class, target) labels inside: success checked by the caller (AutoAttack)

    def __init__(
        self, network: torch.nn.Module, eps: Any = None, *, num_target_classes: int = 9, num_steps: int = 100, **kwargs: Any
    ) -> None:
        for key in ("targeted", "loss"):
            if kwargs.get(key):
                raise ValueError(f"APGDT chooses its targets and loss itself; got {key}={kwargs[key]!r}.")
        super().__init__(network, eps, num_steps=num_steps, **kwargs)
        self.num_target_classes = _check_positive_int("num_target_classes", num_target_classes)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.no_grad():
            logits, y = self.class_logits(images, labels)
        success = is_adversarial(logits, y)

        def run(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, _: int) -> tuple[torch.Tensor, torch.Tensor]:
            points, _, ok, _ = self._apgd(x, torch.stack([y, t], dim=1), eps)  # APGD's state carries the target
            return points, ok

        return attack_over_targets(images, y, logits, success, self.num_target_classes, self.num_restarts, run)

    def objective(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`apgdt_loss` at ``x`` for ``labels`` = ``(N, 2)`` pairs (true class, target), and the class logits."""
        logits, y = self.class_logits(x, labels[:, 0])
        return apgdt_loss(logits, y, labels[:, 1]), logits

    def success(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Untargeted success: the prediction is not the true class ``labels[:, 0]``."""
        return is_adversarial(logits, labels[:, 0])
