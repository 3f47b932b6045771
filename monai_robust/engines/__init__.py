# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""MONAI/Ignite engines for adversarial training and robustness evaluation."""

from __future__ import annotations

from .budget import attack_budget, planned_passes
from .evaluator import RobustnessEvaluator
from .events import RobustEvents, register_robust_events
from .fit import classification_accuracy, fit_classifier
from .plans import AttackPlan, EvaluationOptions
from .prepare_batch import AttackBatch, call_attack, check_attack_device
from .probes import ProbeOptions, gradient_probe, randomness_probe
from .training import (
    AdversarialIteration,
    AdversarialKeys,
    FastATIteration,
    PGDATIteration,
    TRADESIteration,
    UAPIteration,
    adversarial_metrics,
    adversarial_output_transform,
    trades_kl,
)
from .uap_retraining import RetrainingReport, uap_adversarial_retraining

__all__ = [
    "AdversarialIteration",
    "AdversarialKeys",
    "AttackBatch",
    "AttackPlan",
    "EvaluationOptions",
    "FastATIteration",
    "PGDATIteration",
    "ProbeOptions",
    "RetrainingReport",
    "RobustEvents",
    "RobustnessEvaluator",
    "TRADESIteration",
    "UAPIteration",
    "adversarial_metrics",
    "adversarial_output_transform",
    "attack_budget",
    "call_attack",
    "check_attack_device",
    "classification_accuracy",
    "fit_classifier",
    "gradient_probe",
    "planned_passes",
    "randomness_probe",
    "register_robust_events",
    "trades_kl",
    "uap_adversarial_retraining",
]
