# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Adversarial-input detectors as ``nn.Module``s: fitted on clean and adversarial images, fitted statistics kept as
buffers (so checkpoints carry them), one score per image (higher = more likely adversarial), 2D and 3D.

KD + BU (Feinman et al. 2017), LID (Ma et al. 2018), Mahalanobis (Lee et al. 2018), deep-feature classifier (Ma et
al. 2021), feature squeezing (Xu et al. 2018, alone or with deep features); a runtime guard with a conformal
false-positive guarantee, comparisons against the 1 - max softmax baseline, and a detector-aware PGD for adaptive
evaluation.
"""

from __future__ import annotations

from monai_robust.metrics.detection import BASELINE, compare_detectors, confidence_scores

from .adaptive import DetectorAwarePGD
from .base import (
    Detector,
    FeatureHook,
    FittedModule,
    Pooling,
    as_batches,
    detection_auc,
    network_eval,
    pool_features,
    predicted_classes,
)
from .calibration import (
    calibration_size_for,
    conformal_rank,
    conformal_threshold,
    false_positive_rate,
    fpr_range,
    min_calibration_size,
)
from .deep_features import DeepFeatureDetector
from .guard import DetectorGuard
from .kd_bu import KDBUDetector, mc_dropout, nearest_neighbour_bandwidth
from .lid import LIDDetector, lid_mle
from .logistic import LogisticRegression
from .mahalanobis import MahalanobisDetector, mahalanobis_distance
from .squeeze import Combine, FeatureSqueezingDetector, bit_depth_reduction, median_smoothing

__all__ = [
    "BASELINE",
    "calibration_size_for",
    "compare_detectors",
    "confidence_scores",
    "conformal_rank",
    "conformal_threshold",
    "false_positive_rate",
    "fpr_range",
    "min_calibration_size",
    "Combine",
    "DeepFeatureDetector",
    "Detector",
    "DetectorAwarePGD",
    "DetectorGuard",
    "FeatureHook",
    "FeatureSqueezingDetector",
    "FittedModule",
    "KDBUDetector",
    "LIDDetector",
    "LogisticRegression",
    "MahalanobisDetector",
    "Pooling",
    "as_batches",
    "bit_depth_reduction",
    "detection_auc",
    "lid_mle",
    "mahalanobis_distance",
    "mc_dropout",
    "median_smoothing",
    "nearest_neighbour_bandwidth",
    "network_eval",
    "pool_features",
    "predicted_classes",
]
