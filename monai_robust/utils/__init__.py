# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from .enums import LpNorm, as_lp
from .files import CorruptFileError, atomic_torch_save, load_torch_file
from .intensity import LinearIntensityMap
from .overrides import check_cli_overrides, check_override_ids, unknown_override_ids

__all__ = ["CorruptFileError", "LinearIntensityMap", "LpNorm", "as_lp", "atomic_torch_save", "check_cli_overrides",
           "check_override_ids", "load_torch_file", "unknown_override_ids"]
