# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""MONAI transforms that perturb images: any attack on a collated batch, or a fixed δ (a universal
perturbation or a noise control); array and dictionary forms, with provenance in the MetaTensor's metadata."""

from __future__ import annotations

from .array import (
    ADVERSARIAL_META_KEY,
    PERTURBATION_META_KEY,
    AdversarialPerturb,
    ApplyPerturbation,
    attack_provenance,
    load_perturbation,
)
from .dictionary import (
    AdversarialPerturbD,
    AdversarialPerturbd,
    AdversarialPerturbDict,
    ApplyPerturbationD,
    ApplyPerturbationd,
    ApplyPerturbationDict,
)

__all__ = [
    "ADVERSARIAL_META_KEY",
    "PERTURBATION_META_KEY",
    "AdversarialPerturb",
    "AdversarialPerturbD",
    "AdversarialPerturbDict",
    "AdversarialPerturbd",
    "ApplyPerturbation",
    "ApplyPerturbationD",
    "ApplyPerturbationDict",
    "ApplyPerturbationd",
    "attack_provenance",
    "load_perturbation",
]
