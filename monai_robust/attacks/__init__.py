# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Adversarial attacks on MONAI classifiers, 2D and 3D, as plain PyTorch callables.

Bounded attacks (:class:`~monai_robust.attacks.base.BoundedAttack`, ``attack(x, y, eps=None)``): FGSM, BIM, PGD,
APGD, APGD-T, FAB-T, SMIA, the black-box Square and the AutoAttack ensemble; minimisation attacks
(:class:`~monai_robust.attacks.base.MinimizationAttack`): CW and DeepFool; universal perturbations. The gradient loop
is written once in :class:`~monai_robust.attacks.base.BoundedAttack`.
"""

from __future__ import annotations

from .apgd import APGD, dlr_loss, targeted_dlr_loss
from .apgdt import APGDT, apgdt_loss
from .autoattack import STANDARD_ATTACKS, AutoAttack, AutoAttackResult
from .base import Attack, BoundedAttack, MinimizationAttack, NonFiniteError, attack_mode, default_loss, is_adversarial
from .cw import CW
from .deepfool import DeepFool
from .fab import FAB, project_hyperplane
from .fgsm import FGSM
from .functional import batch_view, clip_to_bounds, lp_norm, lp_normalize, lp_project, random_start
from .pgd import BIM, PGD
from .smia import SMIA, prediction_kl
from .square import Square, square_fraction
from .targets import attack_over_targets, ranked_targets
from .threat import ThreatModel
from .uap_sources import NaturalImageDataset, noise_control, procedural_textures
from .universal import SGDUAP, IterativeUAP, UAPResult, UniversalPerturbation, evaluate_uap, uap_adversarial_retraining

__all__ = [
    "APGD",
    "APGDT",
    "STANDARD_ATTACKS",
    "AutoAttack",
    "AutoAttackResult",
    "FAB",
    "Square",
    "apgdt_loss",
    "attack_over_targets",
    "project_hyperplane",
    "ranked_targets",
    "square_fraction",
    "SGDUAP",
    "IterativeUAP",
    "NaturalImageDataset",
    "UAPResult",
    "UniversalPerturbation",
    "dlr_loss",
    "evaluate_uap",
    "noise_control",
    "procedural_textures",
    "targeted_dlr_loss",
    "uap_adversarial_retraining",
    "CW",
    "DeepFool",
    "BIM",
    "FGSM",
    "PGD",
    "SMIA",
    "Attack",
    "BoundedAttack",
    "MinimizationAttack",
    "NonFiniteError",
    "ThreatModel",
    "attack_mode",
    "batch_view",
    "clip_to_bounds",
    "default_loss",
    "is_adversarial",
    "lp_norm",
    "lp_normalize",
    "lp_project",
    "prediction_kl",
    "random_start",
]
