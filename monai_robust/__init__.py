# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""monai_robust: attack, harden, detect and evaluate MONAI medical-image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
