# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The user's own MONAI bundle as the unit of work: load any model-zoo classification bundle, attack it in the
image's stored units through its own preprocessing, harden it, guard it, predict with it (``monai-robust``); and the
project's own two bundles, shipped inside the package (:mod:`.packaged`: ``packaged_bundles``, ``copy_bundle``; not
imported here, so that ``python -m monai_robust.bundle.packaged`` runs cleanly)."""

from .checkpoint import BLOCKS, block_record, hardened_state, insert_recorded_blocks, load_weights, save_hardened
from .contract import InputContract, contract_of
from .layout import BundleLayout
from .loader import LoadedBundle, load_bundle
from .predictor import BundlePredictor
from .stored_units import (
    NormalizeIntensityOp,
    PreprocessingSplit,
    StoredUnitsModel,
    gradient_error,
    split_preprocessing,
)

__all__ = [
    "BLOCKS",
    "BundleLayout",
    "BundlePredictor",
    "InputContract",
    "LoadedBundle",
    "NormalizeIntensityOp",
    "PreprocessingSplit",
    "StoredUnitsModel",
    "block_record",
    "contract_of",
    "gradient_error",
    "hardened_state",
    "insert_recorded_blocks",
    "load_bundle",
    "load_weights",
    "save_hardened",
    "split_preprocessing",
]
