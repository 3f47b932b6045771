# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Networks of the project's own: the small classifier of the tutorials, benchmarks and tests."""

from __future__ import annotations

from .small_cnn import Downsample, SmallCNN

__all__ = ["Downsample", "SmallCNN"]
