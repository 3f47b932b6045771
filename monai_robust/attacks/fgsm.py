# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""FGSM: one signed (L-inf) or normalised (L2, "FGM") gradient step of size ``eps``."""

from __future__ import annotations

from typing import Any

import torch

from monai_robust.attacks.base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """Fast gradient sign method: ``x' = clip(x + eps * sign(grad_x loss))`` (L-inf), or the L2 step
    ``eps * grad / ||grad||_2`` ("FGM") with ``lp=2``.

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: step size = budget, in model-input units (or a :class:`ThreatModel`).
        kwargs: ``lp``, ``bounds``, ``loss``, ``targeted``, ``amp`` as in :class:`~monai_robust.attacks.base.Attack`.

    Raises:
        ValueError: When ``eps < 0`` or another argument is invalid.

    Example::

        >>> attack = FGSM(net, eps=2 / 255, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
    """

    def __init__(self, network: torch.nn.Module, eps: Any, **kwargs: Any) -> None:
        super().__init__(network, eps, **kwargs)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.iterate(images, labels, eps=self.eps, step_size=self.eps, num_steps=1, random_init=False)
