# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Defense blocks and the tools that put them into existing MONAI networks."""

from __future__ import annotations

from .blocks import MeanCentredSparsify, NonLocalAffinity, NonLocalDenoise, SoftThreshold, ThresholdMode, TopKSparsify
from .utils import WithBlock, candidate_insertion_points, insert_blocks, straight_through_mode

__all__ = [
    "MeanCentredSparsify",
    "NonLocalAffinity",
    "NonLocalDenoise",
    "SoftThreshold",
    "ThresholdMode",
    "TopKSparsify",
    "WithBlock",
    "candidate_insertion_points",
    "insert_blocks",
    "straight_through_mode",
]
