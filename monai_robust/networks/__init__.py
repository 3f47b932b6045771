# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Defense blocks, the tools that put them into existing MONAI networks, and the project's small classifier."""

from __future__ import annotations

from .blocks import MeanCentredSparsify, NonLocalAffinity, NonLocalDenoise, SoftThreshold, ThresholdMode, TopKSparsify
from .nets import Downsample, SmallCNN
from .utils import WithBlock, candidate_insertion_points, insert_blocks, straight_through_mode

__all__ = [
    "Downsample",
    "MeanCentredSparsify",
    "NonLocalAffinity",
    "NonLocalDenoise",
    "SmallCNN",
    "SoftThreshold",
    "ThresholdMode",
    "TopKSparsify",
    "WithBlock",
    "candidate_insertion_points",
    "insert_blocks",
    "straight_through_mode",
]
