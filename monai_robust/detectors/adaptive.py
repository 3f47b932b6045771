# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A detector-aware (adaptive) attack: PGD whose objective also pushes a detector's score down, to measure how much
a guard holds against an attacker who knows it."""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.pgd import PGD
from monai_robust.detectors.base import Detector, check_positive

__all__ = ["DetectorAwarePGD"]


class DetectorAwarePGD(PGD):
    """PGD that ascends ``loss(f(x'), y) - weight * D(x')``: it fools the classifier ``f`` while lowering the score
    of the detector ``D`` (white-box on both, as in Carlini & Wagner's evaluation of detectors).

    Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection Methods", AISec 2017,
    https://arxiv.org/abs/1705.07263

    With ``threshold`` (e.g. a :class:`~monai_robust.detectors.guard.DetectorGuard`'s), the detector term is the
    hinge ``weight * max(D(x') - threshold, 0)``: once a sample is under the threshold only the classifier loss
    drives it, and a sample counts as a success (for ``early_stop`` and restarts) only when it fools the classifier
    **and** scores at most ``threshold``. Without it the term is linear in ``D``.

    The detector's gradient is taken as it is (its network in eval mode; Monte-Carlo dropout in
    :class:`~monai_robust.detectors.kd_bu.KDBUDetector` is sampled anew at each step; the sign in Mahalanobis
    pre-processing passes no gradient). Evaluate the result with the detector and the classifier separately.

    Args:
        network: classifier returning logits ``(N, classes)``.
        detector: a fitted detector (usually of the same ``network``).
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call, ``attack(x, y, eps=...)``).
        weight: ``lambda >= 0``, weight of the detector term relative to the classifier loss; 0 gives plain PGD.
        threshold: detector threshold for the hinge and for success; ``None`` for the linear term.
        kwargs: as in :class:`~monai_robust.attacks.pgd.PGD` (``step_size``, ``num_steps``, ``random_start``, ``lp``,
            ``bounds``, ``loss``, ``targeted``, ``early_stop``, ...).

    Raises:
        ValueError: When ``detector`` is not a fitted :class:`Detector`, ``weight < 0``, ``threshold`` is not finite,
            or a PGD argument is invalid.

    Example::

        >>> guard = DetectorGuard(detector).calibrate(clean_val)
        >>> attack = DetectorAwarePGD(net, detector, eps=4 / 255, weight=10.0, threshold=float(guard.threshold),
        ...                           num_steps=20, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)
    """

    _repr_keys = PGD._repr_keys + ("weight", "threshold")

    def __init__(
        self,
        network: torch.nn.Module,
        detector: Detector,
        eps: Any = None,
        *,
        weight: float = 1.0,
        threshold: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, **kwargs)
        if not isinstance(detector, Detector) or not detector.is_fitted:
            raise ValueError(f"detector must be a fitted monai_robust Detector, got {detector!r}.")
        self.detector = detector
        self.weight = check_positive("weight", weight, allow_zero=True)
        if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got threshold={threshold!r}.")
        self.threshold = None if threshold is None else float(threshold)
        self._last_detector_score: torch.Tensor | None = None

    def objective(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss - weight * D(x)`` (or the hinge above ``threshold``) per sample, and the logits at ``x``."""
        score, logits = super().objective(x, labels)
        d = self.detector(x)
        self._last_detector_score = d.detach()
        term = d if self.threshold is None else (d - self.threshold).clamp_min(0)
        return score - self.weight * term, logits

    def success(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fools the classifier and, with ``threshold``, scores at most ``threshold`` at the point last evaluated."""
        fooled = is_adversarial(logits, labels, self.targeted)
        if self.threshold is None or self._last_detector_score is None:
            return fooled
        return fooled & (self._last_detector_score <= self.threshold)
