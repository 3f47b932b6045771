# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``python -m monai_robust.dicom {screen,serve}``: the entry point of :mod:`monai_robust.integrations.dicom.cli`."""

from __future__ import annotations

from monai_robust.integrations.dicom.cli import main

__all__ = ["main"]
