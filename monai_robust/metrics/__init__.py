# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from .robustness import (
    attack_success_rate,
    fooling_rate,
    performance_retained,
    robust_accuracy,
    targeted_success_rate,
    to_class_predictions,
)

__all__ = [
    "attack_success_rate",
    "fooling_rate",
    "performance_retained",
    "robust_accuracy",
    "targeted_success_rate",
    "to_class_predictions",
]
