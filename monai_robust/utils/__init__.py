# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from .enums import LpNorm, as_lp
from .files import CorruptFileError, atomic_torch_save, load_torch_file
from .intensity import LinearIntensityMap
from .overrides import check_cli_overrides, check_override_ids, unknown_override_ids
from .threads import available_cores, default_num_threads, passive_openmp_env, set_num_threads

__all__ = [
    "CorruptFileError",
    "LinearIntensityMap",
    "LpNorm",
    "as_lp",
    "atomic_torch_save",
    "available_cores",
    "check_cli_overrides",
    "check_override_ids",
    "default_num_threads",
    "load_torch_file",
    "passive_openmp_env",
    "set_num_threads",
    "unknown_override_ids",
]
