# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""monai_robust: attack, harden, detect and evaluate MONAI medical-image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"

from . import (  # noqa: E402
    attacks,
    bundle,
    data,
    detectors,
    engines,
    handlers,
    metrics,
    networks,
    report,
    transforms,
    utils,
)
from .data import datalist  # noqa: E402,F401  (config files reach it as monai_robust.data.datalist)

__all__ = ["__version__", "attacks", "bundle", "data", "detectors", "engines", "handlers", "metrics", "networks", "report", "transforms", "utils"]
