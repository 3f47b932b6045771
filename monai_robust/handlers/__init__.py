# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Ignite handlers: attack progress bar, ε warm-up, catastrophic-overfitting monitor, perturbation statistics, report, TensorBoard, MLflow,
resumable training checkpoints."""

from __future__ import annotations

from .attack_progress import AttackProgress
from .catastrophic_overfitting import CatastrophicOverfittingMonitor
from .eps_schedule import EpsSchedule
from .mlflow_robustness import RobustnessMLFlowHandler
from .perturbation_stats import PerturbationStats
from .precise_bn import PreciseBatchNorm
from .prediction_writer import GuardedPredictionWriter
from .report import RobustnessReport
from .robustness_curves import robustness_curves, tracking_name
from .tensorboard_images import RobustnessTensorBoard, example_grid
from .training_state import CheckedCheckpointLoader, ResumableTraining

__all__ = [
    "AttackProgress",
    "CheckedCheckpointLoader",
    "CatastrophicOverfittingMonitor",
    "EpsSchedule",
    "GuardedPredictionWriter",
    "PerturbationStats",
    "PreciseBatchNorm",
    "ResumableTraining",
    "RobustnessMLFlowHandler",
    "RobustnessReport",
    "RobustnessTensorBoard",
    "example_grid",
    "robustness_curves",
    "tracking_name",
]
