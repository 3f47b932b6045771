# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""FGSM: one signed (L-inf) or normalised (L2, "FGM") gradient step of size ``eps``."""

from __future__ import annotations

from typing import Any

import torch

from monai_robust.attacks.base import BoundedAttack

__all__ = ["FGSM"]


class FGSM(BoundedAttack):
    """Fast gradient sign method: ``x' = clip(x + eps * sign(grad_x loss))`` (L-inf), or the L2 step
    ``eps * grad / ||grad||_2`` ("FGM") with ``lp=2``.

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: default step size = budget, in model-input units (or a :class:`ThreatModel`, or ``None`` to give it
            at each call).
        kwargs: ``lp``, ``bounds``, ``loss``, ``targeted``, ``amp`` as in :class:`~monai_robust.attacks.base.Attack`
            (fp32 by default: with ``amp=True`` the bf16 step is checked in fp32 and redone in fp32 where it
            fails, which costs about what bf16 saves on one step).

    Raises:
        ValueError: When ``eps < 0`` or another argument is invalid.

    Example::

        >>> attack = FGSM(net, eps=2 / 255, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
        >>> adv4 = attack(images, labels, eps=4 / 255)
    """

    exact_amp = True

    def __init__(self, network: torch.nn.Module, eps: Any = None, **kwargs: Any) -> None:
        super().__init__(network, eps, **kwargs)

    @property
    def single_step(self) -> bool:
        return True

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        return self.iterate(images, labels, eps=eps, step_size=eps, num_steps=1, random_init=False)

    def refine(self, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        """The fp32 FGSM step itself (from the clean images), for the samples whose mixed-precision step is not
        adversarial in fp32: a mixed-precision FGSM is never weaker than the fp32 one."""
        return self._ascend_active(x, x.clone(), labels, eps, eps, 1)
