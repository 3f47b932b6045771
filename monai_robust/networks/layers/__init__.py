# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Pure functions behind the defense blocks (sparsification, shrinkage, non-local means)."""

from __future__ import annotations

from .nonlocal_means import non_local_means
from .sparsity import (
    channel_view,
    mean_centred_shrink,
    quantile_threshold,
    soft_threshold,
    straight_through,
    topk_sparsify,
)

__all__ = [
    "channel_view",
    "mean_centred_shrink",
    "non_local_means",
    "quantile_threshold",
    "soft_threshold",
    "straight_through",
    "topk_sparsify",
]
