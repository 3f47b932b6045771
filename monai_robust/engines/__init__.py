# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""MONAI/Ignite engines for adversarial training and robustness evaluation."""

from __future__ import annotations

from .evaluator import AttackSpec, RobustnessEvaluator, eps_key
from .events import RobustEvents, register_robust_events
from .prepare_batch import AttackBatch, check_attack_device
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
    "AttackSpec",
    "FastATIteration",
    "PGDATIteration",
    "RetrainingReport",
    "RobustEvents",
    "RobustnessEvaluator",
    "TRADESIteration",
    "UAPIteration",
    "adversarial_metrics",
    "adversarial_output_transform",
    "check_attack_device",
    "eps_key",
    "register_robust_events",
    "trades_kl",
    "uap_adversarial_retraining",
]
