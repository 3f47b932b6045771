# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import importlib
from typing import Any

from .batches import as_batches, as_image_batch, image_label, iter_image_batches, split_batch, training_batch_size
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
from .natural_images import IMAGE_EXTENSIONS, NaturalImageDataset, photo_crops, procedural_textures, sample_photo_paths
from .perturbation import load_perturbation, read_perturbation_record, save_perturbation

__all__ = [
    "IMAGE_EXTENSIONS",
    "DATALIST_SPLITS",
    "MEDMNIST_INTENSITY",
    "MEDMNIST_SPLITS",
    "PHANTOM_CLASSES",
    "DicomReader",
    "ImageDatalist",
    "NaturalImageDataset",
    "OnError",
    "as_batches",
    "as_image_batch",
    "check_image",
    "chest_radiograph_phantom",
    "ct_phantom",
    "datalist_classes",
    "datalist_from_csv",
    "datalist_from_folders",
    "datalist_intensity_map",
    "download_medmnist",
    "generate_phantom_dataset",
    "image_label",
    "image_loader",
    "is_dicom_input",
    "iter_image_batches",
    "load_datalist",
    "load_image",
    "load_perturbation",
    "loading_transforms",
    "medmnist_datalist",
    "medmnist_dataset",
    "medmnist_tensors",
    "phantom_intensity_map",
    "photo_crops",
    "procedural_textures",
    "read_dicom",
    "read_dicom_series",
    "read_medmnist",
    "read_perturbation_record",
    "resolve_datalist",
    "sample_photo_paths",
    "save_perturbation",
    "split_batch",
    "training_batch_size",
    "write_datalist",
]

# ``synthetic`` is imported on first use: importing it here would make ``python -m monai_robust.data.synthetic``
# (the command-line generator) warn that the module was already in sys.modules when run as __main__.
_SYNTHETIC = ("PHANTOM_CLASSES", "chest_radiograph_phantom", "ct_phantom", "generate_phantom_dataset", "phantom_intensity_map")
_DATASET_DIR = ("resolve_datalist",)  # dataset_dir imports synthetic


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    if name in _DATASET_DIR or name == "dataset_dir":
        module = importlib.import_module(f"{__name__}.dataset_dir")  # the submodule, not this __getattr__ again
        return module if name == "dataset_dir" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
