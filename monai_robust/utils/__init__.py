# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from .enums import LpNorm, as_lp
from .intensity import LinearIntensityMap
from .threads import available_cores, default_num_threads, passive_openmp_env, set_num_threads

__all__ = [
    "LinearIntensityMap",
    "LpNorm",
    "as_lp",
    "available_cores",
    "default_num_threads",
    "passive_openmp_env",
    "set_num_threads",
]
