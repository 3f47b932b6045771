# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from .balanced import auc_rows, balanced_accuracy, balanced_accuracy_rows, bootstrap_intervals, macro_auc
from .clinical import class_probabilities, clinical_metrics, roc_auc, sensitivity_specificity
from .collapse import collapse_check, prediction_histogram
from .detection import BASELINE, compare_detectors, confidence_scores, detection_summary
from .intervals import beta_quantile, betainc, binomial_interval, percentile_interval, stratified_bootstrap_indices
from .perceptibility import perceptibility, perturbation_norms, psnr, ssim, summarize
from .robustness import (
    attack_success_rate,
    fooling_rate,
    performance_retained,
    retained,
    robust_accuracy,
    targeted_success_rate,
    to_class_predictions,
)
from .universal import per_class_fooling_rate, per_class_targeted_success_rate
from .validity import (
    ValidityCheck,
    check_budget,
    check_gradients,
    check_iterative_vs_single_step,
    check_monotone_in_eps,
    check_randomness,
    check_reference_attacks,
    check_unbounded,
    run_validity_checks,
    summarize_checks,
)

__all__ = [
    "BASELINE",
    "compare_detectors",
    "confidence_scores",
    "detection_summary",
    "auc_rows",
    "balanced_accuracy",
    "balanced_accuracy_rows",
    "beta_quantile",
    "betainc",
    "binomial_interval",
    "bootstrap_intervals",
    "collapse_check",
    "macro_auc",
    "percentile_interval",
    "prediction_histogram",
    "retained",
    "stratified_bootstrap_indices",
    "per_class_fooling_rate",
    "per_class_targeted_success_rate",
    "ValidityCheck",
    "attack_success_rate",
    "check_budget",
    "check_gradients",
    "check_iterative_vs_single_step",
    "check_monotone_in_eps",
    "check_randomness",
    "check_reference_attacks",
    "check_unbounded",
    "class_probabilities",
    "clinical_metrics",
    "fooling_rate",
    "perceptibility",
    "performance_retained",
    "perturbation_norms",
    "psnr",
    "robust_accuracy",
    "roc_auc",
    "run_validity_checks",
    "sensitivity_specificity",
    "ssim",
    "summarize",
    "summarize_checks",
    "targeted_success_rate",
    "to_class_predictions",
]
