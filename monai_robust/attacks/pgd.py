# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""PGD (L-inf, L2, L1) with random start and restarts, and BIM = PGD without random start."""

from __future__ import annotations

from typing import Any

import torch

from monai_robust.attacks.base import BoundedAttack
from monai_robust.attacks.precision import fp32_steps
from monai_robust.attacks.threat import _check_positive, _check_positive_int

__all__ = ["BIM", "PGD"]


class PGD(BoundedAttack):
    """Projected gradient descent: ``num_steps`` steps of size ``step_size`` along the Lp steepest-ascent
    direction, each projected back onto the ``eps`` ball and clipped to ``bounds``; optional uniform random
    start inside the ball and ``num_restarts`` restarts (each sample keeps its best restart).

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    https://arxiv.org/abs/1706.06083

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: default Lp radius in model-input units (or a :class:`ThreatModel`, or ``None`` to give it at each
            call).
        step_size: step in model-input units, the same at every ``eps``; or
        rel_step_size: step as a multiple of the call's ``eps``; default ``2.5 / num_steps`` (Madry et al.) when
            neither is given.
        num_steps: iterations (>= 1).
        num_restarts: independent runs (>= 1), each from a new random start.
        random_start: start from a uniform random point of the ball (``False`` gives BIM).
        kwargs: ``lp``, ``bounds``, ``loss``, ``targeted``, ``early_stop``, ``amp`` as in
            :class:`~monai_robust.attacks.base.Attack` (``amp=True``: the first ``num_steps - ceil(num_steps / 5)``
            steps in bf16, the rest in fp32; with ``early_stop`` only for the samples not adversarial in fp32 after
            the bf16 steps).

    Raises:
        ValueError: When ``eps < 0``, ``step_size <= 0`` or ``rel_step_size <= 0`` (or both given),
            ``num_steps < 1`` or ``num_restarts < 1``.

    Example::

        >>> attack = PGD(net, eps=8 / 255, num_steps=20, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)
        >>> adv_small = attack(images, labels, eps=2 / 255)  # step 2.5 * eps / 20 at that eps
    """

    _repr_keys = ("step_size", "rel_step_size", "num_steps", "num_restarts", "random_start")
    _default_rel_step = 2.5
    exact_amp = True
    amp_by_default = False  # opt-in: the +-0.005 agreement with fp32 is measured in bench/README.md

    def __init__(
        self,
        network: torch.nn.Module,
        eps: Any = None,
        *,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        num_steps: int = 10,
        num_restarts: int = 1,
        random_start: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, **kwargs)
        self.num_steps = _check_positive_int("num_steps", num_steps)
        self.num_restarts = _check_positive_int("num_restarts", num_restarts)
        if step_size is not None and rel_step_size is not None:
            raise ValueError(
                f"give step_size (absolute) or rel_step_size (times eps), not both: got {step_size!r} and {rel_step_size!r}."
            )
        self.step_size = None if step_size is None else _check_positive("step_size", step_size)
        self._default_step = rel_step_size is None and step_size is None
        if self._default_step:
            rel_step_size = self._default_rel_step / self.num_steps
        self.rel_step_size = None if rel_step_size is None else _check_positive("rel_step_size", rel_step_size)
        self.random_start = bool(random_start)

    @property
    def single_step(self) -> bool:
        return self.num_steps == 1

    def step_for(self, eps: float) -> float:
        """The step size at budget ``eps``, in model-input units.

        Example::

            >>> PGD(net, num_steps=10).step_for(0.04)
            0.01
        """
        if self._default_step:  # the same float as the paper's formula
            return self._default_rel_step * eps / self.num_steps
        return self.step_size if self.rel_step_size is None else self.rel_step_size * eps

    @property
    def refine_steps(self) -> int:
        """The steps a mixed-precision call runs in fp32, on the samples not adversarial in fp32 after the others:
        ``ceil(num_steps / 5)``, taken from ``num_steps`` so that the attack keeps its number of steps."""
        return fp32_steps(self.num_steps)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        mixed = self._precision is not None and self.exact_amp
        # without early stop every sample runs every step, the last ones in fp32 (the fp32 attack's passes);
        # with early stop the samples broken in fp32 after the bf16 steps stop there (see refine)
        tail = self.refine_steps if mixed else 0
        return self.iterate(
            images,
            labels,
            eps=eps,
            step_size=self.step_for(eps),
            num_steps=self.num_steps - (tail if self._stop else 0),
            random_init=self.random_start,
            num_restarts=self.num_restarts,
            fp32_last=0 if self._stop else tail,
        )

    def refine(self, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor | None:
        """With early stop, the last :attr:`refine_steps` steps in fp32, from the low-precision iterate, for the
        samples not adversarial in fp32 (each leaves as soon as it is); without, nothing (they ran in
        :meth:`perturb`)."""
        if not self._stop:
            return None
        return self._ascend_active(x, adv, labels, eps, self.step_for(eps), self.refine_steps)


class BIM(PGD):
    """Basic iterative method: PGD without random start (and one run).

    Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR workshop 2017,
    https://arxiv.org/abs/1607.02533

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: default Lp radius in model-input units (or a :class:`ThreatModel`, or ``None``).
        step_size: step in model-input units; default ``rel_step_size = 1.25 / num_steps`` (times the call's eps).
        num_steps: iterations (>= 1).
        kwargs: as in :class:`PGD` (``rel_step_size`` included, without ``random_start`` and ``num_restarts``).

    Example::

        >>> adv = BIM(net, eps=4 / 255, step_size=1 / 255, num_steps=10, bounds=(0.0, 1.0))(images, labels)
    """

    _default_rel_step = 1.25

    def __init__(
        self, network: torch.nn.Module, eps: Any = None, *, step_size: float | None = None, num_steps: int = 10, **kwargs: Any
    ) -> None:
        for k in ("random_start", "num_restarts"):
            if k in kwargs:
                raise ValueError(f"BIM has no {k}; use PGD, got {k}={kwargs[k]!r}.")
        super().__init__(network, eps, step_size=step_size, num_steps=num_steps, random_start=False, **kwargs)
