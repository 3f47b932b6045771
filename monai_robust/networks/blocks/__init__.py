# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Defense blocks for 2D and 3D networks: sparsity denoising and non-local feature denoising."""

from __future__ import annotations

from .nonlocal_denoise import NonLocalAffinity, NonLocalDenoise
from .sparse_denoise import MeanCentredSparsify, SoftThreshold, ThresholdMode, TopKSparsify

__all__ = ["MeanCentredSparsify", "NonLocalAffinity", "NonLocalDenoise", "SoftThreshold", "ThresholdMode", "TopKSparsify"]
