# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A runtime guard: a fitted detector plus a threshold calibrated on clean images at a chosen false-positive rate,
turning scores into a per-image verdict that inference can attach to each prediction."""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_robust.data.batches import as_batches
from monai_robust.detectors.base import Detector, FittedModule

__all__ = ["DetectorGuard"]


class DetectorGuard(FittedModule):
    """Per-image verdicts ``{adversarial_suspected, score, threshold}`` from a fitted detector and a threshold
    calibrated on clean validation images (see :class:`~monai_robust.detectors.base.Detector`).

    :meth:`calibrate` scores ``n`` clean images (not used to fit the detector) and sets the threshold to the
    ``(floor(fpr * n) + 1)``-th largest score, so at most ``floor(fpr * n)`` of them lie strictly above it: on those
    images the false-positive rate is at most ``fpr`` and, for continuous scores, within ``1 / n`` of it. On new clean images from the same source
    the rate is ``fpr`` up to sampling error; the calibration images' measured rate is kept in ``calibration_fpr``.

    The detector is a registered sub-module, so ``guard.state_dict()`` carries the detector's fitted statistics
    and the threshold (the network itself, held by the detector by reference, is not included).

    Args:
        detector: a fitted (or to be fitted before :meth:`calibrate`) detector.
        fpr: target false-positive rate on clean images, in (0, 1); default 0.05.

    Raises:
        ValueError: When ``detector`` is not a :class:`Detector` or ``fpr`` is not in (0, 1).

    Example::

        >>> guard = DetectorGuard(detector, fpr=0.05).calibrate(clean_validation_images)
        >>> verdict = guard(images)  # {"adversarial_suspected": (N,) bool, "score": (N,), "threshold": (N,)}
        >>> guard.verdicts(images)[0]  # {"adversarial_suspected": False, "score": -3.1, "threshold": 0.7}
    """

    def __init__(self, detector: Detector, fpr: float = 0.05) -> None:
        super().__init__()
        if not isinstance(detector, Detector):
            raise ValueError(f"detector must be a monai_robust Detector, got {type(detector).__name__}.")
        if not isinstance(fpr, (int, float)) or isinstance(fpr, bool) or not (0 < fpr < 1):
            raise ValueError(f"fpr must be a number in (0, 1), got fpr={fpr!r}.")
        self.detector = detector
        self.fpr = float(fpr)
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("calibration_fpr", torch.tensor(float("nan")))

    def calibrate(self, clean: Any) -> DetectorGuard:
        """Sets the threshold from clean validation images.

        Args:
            clean: clean images ``(N, C, *spatial)`` or an iterable of batches, none used to fit the detector.

        Returns:
            ``self``, calibrated.

        Raises:
            RuntimeError: When the detector is not fitted.
            ValueError: When fewer than ``ceil(1 / fpr)`` images are given (the rate could not be resolved).
        """
        batches = as_batches(clean, "clean")
        n = sum(b.shape[0] for b in batches)
        need = math.ceil(1 / self.fpr - 1e-9)
        if n < need:
            raise ValueError(f"calibrating at fpr={self.fpr} needs at least {need} clean images, got {n}.")
        with torch.no_grad():
            scores = torch.cat([self.detector(b).detach().float() for b in batches])
        ordered = scores.sort(descending=True).values
        allowed = math.floor(self.fpr * n + 1e-9)  # clean images allowed strictly above the threshold
        self.threshold = ordered[allowed].clone()
        self.calibration_fpr = (scores > self.threshold).float().mean()
        self.fitted.fill_(True)
        return self

    def forward(self, img: Any) -> dict[str, torch.Tensor]:
        """Verdicts for a batch.

        Args:
            img: ``(N, C, *spatial)`` images, preprocessed as for the network.

        Returns:
            ``{"adversarial_suspected": (N,) bool, "score": (N,) float, "threshold": (N,) float}``.

        Raises:
            RuntimeError: When not calibrated (or the detector is not fitted).
        """
        self._check_fitted()
        score = self.detector(img)
        return {
            "adversarial_suspected": score > self.threshold,
            "score": score,
            "threshold": self.threshold.expand_as(score),
        }

    def verdicts(self, img: Any) -> list[dict[str, Any]]:
        """Per-image verdicts as plain Python values (for reports, DICOM SR, JSON), scored without gradients.

        Returns:
            One ``{"adversarial_suspected": bool, "score": float, "threshold": float}`` per image.
        """
        with torch.no_grad():
            out = self.forward(img)
        return [
            {"adversarial_suspected": bool(s), "score": float(v), "threshold": float(self.threshold)}
            for s, v in zip(out["adversarial_suspected"].tolist(), out["score"].tolist())
        ]

    def extra_repr(self) -> str:
        return f"fpr={self.fpr}, threshold={float(self.threshold):.6g}"

