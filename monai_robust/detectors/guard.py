# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A runtime guard: a fitted detector plus a threshold calibrated on clean images at a chosen false-positive rate
with a finite-sample guarantee (:mod:`monai_robust.detectors.calibration`), turning scores into a per-image verdict
that inference can attach to each prediction."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from monai_robust.detectors.base import Detector, FittedModule, as_batches
from monai_robust.detectors.calibration import (
    calibration_size_for,
    conformal_rank,
    conformal_threshold,
    false_positive_rate,
    fpr_range,
    min_calibration_size,
)

__all__ = ["DetectorGuard"]

logger = logging.getLogger(__name__)


class DetectorGuard(FittedModule):
    """Per-image verdicts ``{adversarial_suspected, score, threshold}`` from a fitted detector and a threshold
    calibrated on clean validation images (see :class:`~monai_robust.detectors.base.Detector`).

    :meth:`calibrate` scores ``n`` clean images (not used to fit the detector) and sets the threshold to the
    ``k = ceil((n + 1)(1 - fpr))``-th smallest score (split-conformal, :mod:`~monai_robust.detectors.calibration`):
    a new clean image from the same source is flagged with probability at most ``fpr``, for any detector and any
    ``n`` at or above the minimum. It refuses fewer than ``ceil(1 / fpr - 1)`` images (19 at ``fpr = 0.05``), below which no threshold has
    that guarantee. The rate of one calibrated guard still varies with the calibration draw (19 images at 0.05: more
    than 17.6 % in one guard of forty); :meth:`calibration_report` gives that range, and :meth:`held_out_fpr` measures the
    rate on other clean images with an exact interval.

    The detector is a registered sub-module, so ``guard.state_dict()`` carries the detector's fitted statistics,
    the threshold and the calibration size (the network itself, held by the detector by reference, is not included).

    Args:
        detector: a fitted (or to be fitted before :meth:`calibrate`) detector.
        fpr: target false-positive rate on clean images, in (0, 1); default 0.05.

    Raises:
        ValueError: When ``detector`` is not a :class:`Detector` or ``fpr`` is not in (0, 1).

    Example::

        >>> guard = DetectorGuard(detector, fpr=0.05).calibrate(clean_validation_images)
        >>> verdict = guard(images)  # {"adversarial_suspected": (N,) bool, "score": (N,), "threshold": (N,)}
        >>> guard.verdicts(images)[0]  # {"adversarial_suspected": False, "score": -3.1, "threshold": 0.7}
        >>> guard.held_out_fpr(other_clean_images)["interval"]  # [0.031, 0.068]
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
        self.register_buffer("calibration_size", torch.tensor(0))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if prefix + "calibration_size" not in state_dict:  # a guard saved before the size was recorded: size unknown
            state_dict = {**state_dict, prefix + "calibration_size": torch.tensor(0)}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def calibrate(self, clean: Any) -> DetectorGuard:
        """Sets the threshold from clean validation images: the ``ceil((n + 1)(1 - fpr))``-th smallest of their
        scores.

        Args:
            clean: clean images ``(N, C, *spatial)`` or an iterable of batches, none used to fit the detector.

        Returns:
            ``self``, calibrated.

        Raises:
            RuntimeError: When the detector is not fitted.
            ValueError: When fewer than ``ceil(1 / fpr - 1)`` images are given (the message says how many are
                needed), or a score is not finite.
        """
        batches = as_batches(clean, "clean")
        conformal_rank(sum(b.shape[0] for b in batches), self.fpr)  # refuses too few images before scoring any
        with torch.no_grad():
            scores = torch.cat([self.detector(b).detach().float() for b in batches])
        threshold, _ = conformal_threshold(scores, self.fpr)
        self.threshold = torch.tensor(threshold, dtype=scores.dtype, device=scores.device)
        self.calibration_fpr = (scores > self.threshold).float().mean()
        self.calibration_size = torch.tensor(int(scores.numel()), device=scores.device)
        self.fitted.fill_(True)
        n, k = int(scores.numel()), conformal_rank(int(scores.numel()), self.fpr)
        upper = fpr_range(n, k)[1]
        if upper > 2 * self.fpr and 2 * self.fpr < 1:
            logger.warning(
                "guard calibrated on %d clean images at fpr=%.3g: one such guard in forty flags more than %.1f %% of "
                "clean images; with %d calibration images that is below %.3g.",
                n, self.fpr, 100 * upper, calibration_size_for(self.fpr, 2 * self.fpr, probability=0.975), 2 * self.fpr,
            )
        return self

    def calibration_report(self, confidence: float = 0.95) -> dict[str, Any]:
        """The evidence behind the false-positive promise, for reports and logs.

        Args:
            confidence: the probability of ``fpr_range``, in (0, 1); default 0.95.

        Returns:
            ``{"target_fpr", "calibration_size", "rank", "threshold", "calibration_fpr", "fpr_range",
            "min_calibration_size", "rule"}``: ``fpr_range`` is where the rate of a guard calibrated on this many
            images falls with probability ``confidence`` (continuous scores); ``calibration_size`` is 0 and the range
            ``nan`` for a guard loaded from a file that did not record it.

        Raises:
            RuntimeError: When not calibrated.
        """
        self._check_fitted()
        n = int(self.calibration_size)
        k = conformal_rank(n, self.fpr) if n >= min_calibration_size(self.fpr) else None
        return {
            "target_fpr": self.fpr,
            "calibration_size": n,
            "rank": k,
            "threshold": float(self.threshold),
            "calibration_fpr": float(self.calibration_fpr),
            "fpr_range": list(fpr_range(n, k, confidence)) if k else [float("nan")] * 2,
            "min_calibration_size": min_calibration_size(self.fpr),
            "rule": "threshold = ceil((n+1)(1-fpr))-th smallest clean calibration score; P(false positive) <= fpr",
        }

    def held_out_fpr(self, clean: Any, confidence: float = 0.95) -> dict[str, Any]:
        """The false-positive rate measured on clean images not used to fit or calibrate, with its exact interval.

        Args:
            clean: held-out clean images ``(N, C, *spatial)`` or an iterable of batches.
            confidence: the interval's coverage; default 0.95.

        Returns:
            :func:`~monai_robust.detectors.calibration.false_positive_rate`'s ``{"fpr", "n", "false_positives",
            "interval", "method"}`` plus ``"target_fpr"``, ``"calibration_size"`` and ``"fpr_range"`` (see
            :meth:`calibration_report`).

        Raises:
            RuntimeError: When not calibrated.
            ValueError: When ``clean`` holds no image.
        """
        self._check_fitted()
        with torch.no_grad():
            flagged = torch.cat([self.forward(b)["adversarial_suspected"] for b in as_batches(clean, "clean")])
        report = self.calibration_report(confidence)
        return {
            **false_positive_rate(flagged, confidence),
            "target_fpr": self.fpr,
            "calibration_size": report["calibration_size"],
            "fpr_range": report["fpr_range"],
        }

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
        return f"fpr={self.fpr}, threshold={float(self.threshold):.6g}, calibration_size={int(self.calibration_size)}"

