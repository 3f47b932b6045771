# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Small phantom datasets written once per test session (a few hundred milliseconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_robust.data.synthetic import generate_phantom_dataset

PHANTOM_ARGS = {2: {"num_images": 12, "size": 32, "seed": 3}, 3: {"num_images": 8, "size": 16, "seed": 3}}


@pytest.fixture(scope="session")
def phantom2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datalist of a 12-image 32x32 DICOM phantom set."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("p2") / "set", spatial_dims=2, **PHANTOM_ARGS[2])


@pytest.fixture(scope="session")
def phantom3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datalist of an 8-volume 16^3 NIfTI phantom set."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("p3") / "set", spatial_dims=3, **PHANTOM_ARGS[3])
