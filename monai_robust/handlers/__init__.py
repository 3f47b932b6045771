# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Ignite handlers: ε warm-up, catastrophic-overfitting monitor, perturbation statistics, report, TensorBoard, MLflow."""

from __future__ import annotations

from .catastrophic_overfitting import CatastrophicOverfittingMonitor
from .eps_schedule import EpsSchedule
from .mlflow_robustness import RobustnessMLFlowHandler
from .perturbation_stats import PerturbationStats
from .precise_bn import PreciseBatchNorm
from .prediction_writer import GuardedPredictionWriter
from .report import RobustnessReport
from .robustness_curves import robustness_curves, tracking_name
from .tensorboard_images import RobustnessTensorBoard, example_grid

__all__ = [
    "CatastrophicOverfittingMonitor",
    "EpsSchedule",
    "GuardedPredictionWriter",
    "PerturbationStats",
    "PreciseBatchNorm",
    "RobustnessMLFlowHandler",
    "RobustnessReport",
    "RobustnessTensorBoard",
    "example_grid",
    "robustness_curves",
    "tracking_name",
]
