# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from typing import Any

from .datalist import (
    DATALIST_SPLITS,
    datalist_classes,
    datalist_intensity_map,
    image_loader,
    load_datalist,
    load_image,
    loading_transforms,
    write_datalist,
)
from .folders import ImageDatalist, OnError, check_image, datalist_from_csv, datalist_from_folders
from .image_reader import DicomReader, is_dicom_input, read_dicom, read_dicom_series
from .medmnist import (
    MEDMNIST_INTENSITY,
    MEDMNIST_SPLITS,
    download_medmnist,
    medmnist_datalist,
    medmnist_dataset,
    medmnist_tensors,
    read_medmnist,
)

__all__ = [
    "DATALIST_SPLITS",
    "MEDMNIST_INTENSITY",
    "MEDMNIST_SPLITS",
    "PHANTOM_CLASSES",
    "DicomReader",
    "ImageDatalist",
    "OnError",
    "check_image",
    "chest_radiograph_phantom",
    "ct_phantom",
    "datalist_classes",
    "datalist_from_csv",
    "datalist_from_folders",
    "datalist_intensity_map",
    "download_medmnist",
    "generate_phantom_dataset",
    "image_loader",
    "is_dicom_input",
    "load_datalist",
    "load_image",
    "loading_transforms",
    "medmnist_datalist",
    "medmnist_dataset",
    "medmnist_tensors",
    "phantom_intensity_map",
    "read_dicom",
    "read_dicom_series",
    "read_medmnist",
    "write_datalist",
]

# ``synthetic`` is imported on first use: importing it here would make ``python -m monai_robust.data.synthetic``
# (the command-line generator) warn that the module was already in sys.modules when run as __main__.
_SYNTHETIC = ("PHANTOM_CLASSES", "chest_radiograph_phantom", "ct_phantom", "generate_phantom_dataset", "phantom_intensity_map")


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
