# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Datalists (MONAI's decathlon-style JSON) with their class names and intensity map, and the loading transforms.

A datalist written by this package is the JSON that MONAI's ``load_decathlon_datalist`` reads, with a few more
top-level keys::

    {"name": ..., "spatial_dims": 2, "classes": ["normal", "lesion"],
     "intensity_map": {"slope": ..., "intercept": ..., "physical_range": [lo, hi], "units": "HU"},
     "training": [{"image": "images/x.dcm", "label": 0}, ...], "validation": [...], "test": [...]}

Image paths are relative to the JSON's folder; ``label`` is the class index into ``classes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, load_decathlon_datalist
from monai.transforms import Compose, EnsureTyped, LoadImage, LoadImaged

from monai_robust.data.image_reader import DicomReader
from monai_robust.utils.intensity import LinearIntensityMap

__all__ = [
    "DATALIST_SPLITS",
    "datalist_classes",
    "datalist_intensity_map",
    "image_loader",
    "load_datalist",
    "load_image",
    "loading_transforms",
    "write_datalist",
]

DATALIST_SPLITS = ("training", "validation", "test")


def _read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: datalist file not found.")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e


def write_datalist(
    path: str | Path,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    classes: Sequence[str],
    intensity_map: LinearIntensityMap | None = None,
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Writes a datalist that :func:`load_datalist`, :func:`datalist_classes` and :func:`datalist_intensity_map` read.

    Relative image paths are taken relative to the JSON's folder; paths inside that folder are stored relative
    to it, others absolute.

    Args:
        path: the JSON file to write.
        splits: ``{"training": [{"image": ..., "label": ...}, ...], "validation": [...], "test": [...]}``.
        classes: class names (``label`` indexes them).
        intensity_map: the raw -> model map of these images, or ``None`` when unknown.
        overwrite: replace an existing file (default: refuse).
        extra: more top-level keys (``name``, ``description``, ...).

    Returns:
        ``path``.

    Raises:
        ValueError: When ``path`` exists and ``overwrite`` is false, or an item lacks ``image``/``label`` or has a
            label outside ``classes``.

    Example::

        >>> write_datalist("data/dataset.json", {"training": train, "test": test}, ["normal", "lesion"], imap)
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it.")
    root = path.parent.resolve()
    record: dict[str, Any] = {**extra, "classes": [str(c) for c in classes]}
    if intensity_map is not None:
        record["intensity_map"] = intensity_map.to_dict()
    for name, items in splits.items():
        out = []
        for i, item in enumerate(items):
            if "image" not in item or "label" not in item:
                raise ValueError(f"{name}[{i}] needs 'image' and 'label', got keys {sorted(item)}.")
            label = item["label"]
            if not (isinstance(label, (int, np.integer)) and 0 <= int(label) < len(classes)):
                raise ValueError(f"{name}[{i}]: label {label!r} is not an index into classes {list(classes)}.")
            image = Path(os.path.abspath(root / item["image"]))  # relative paths: relative to the JSON's folder
            rel = os.path.relpath(image, root)
            out.append({**item, "image": rel if not rel.startswith("..") else str(image), "label": int(label)})
        record[name] = out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path


def load_datalist(path: str | Path, split: str = "training") -> list[dict[str, Any]]:
    """The data dicts of one split, image paths made absolute (MONAI's ``load_decathlon_datalist``).

    Args:
        path: the datalist JSON.
        split: ``"training"``, ``"validation"`` or ``"test"`` (any key that holds a list of dicts).

    Returns:
        ``[{"image": "/abs/path", "label": int}, ...]``.

    Raises:
        ValueError: When the file is missing or not JSON, or has no list ``split``.

    Example::

        >>> train = load_datalist("phantoms/dataset.json", "training")
    """
    data = _read_json(path)
    if not isinstance(data.get(split), list):
        raise ValueError(f"{path}: no split {split!r}; lists in this file: {sorted(k for k, v in data.items() if isinstance(v, list))}.")
    return load_decathlon_datalist(path, is_segmentation=False, data_list_key=split)


def datalist_intensity_map(path: str | Path) -> LinearIntensityMap:
    """The raw -> model-input :class:`LinearIntensityMap` recorded in a datalist.

    Raises:
        ValueError: When the file is missing, not JSON, or has no ``intensity_map``.
    """
    data = _read_json(path)
    if not isinstance(data.get("intensity_map"), dict):
        raise ValueError(f"{path}: no 'intensity_map' record.")
    return LinearIntensityMap.from_dict(data["intensity_map"])


def datalist_classes(path: str | Path) -> list[str]:
    """The class names recorded in a datalist (``label`` indexes this list).

    Raises:
        ValueError: When the file is missing, not JSON, or has no ``classes`` list.
    """
    data = _read_json(path)
    if not isinstance(data.get("classes"), list):
        raise ValueError(f"{path}: no 'classes' list.")
    return [str(c) for c in data["classes"]]


def image_loader(ensure_channel_first: bool = True, dtype: Any = np.float32) -> LoadImage:
    """MONAI's ``LoadImage`` (``image_only``) with :class:`DicomReader` registered in front of MONAI's readers.

    DICOM files and series folders go to :class:`DicomReader`; NIfTI, PNG, ... to MONAI's own readers.

    Args:
        ensure_channel_first: put the channel first (adding one for grayscale).
        dtype: output dtype.

    Returns:
        A callable ``path -> MetaTensor``.
    """
    loader = LoadImage(image_only=True, ensure_channel_first=ensure_channel_first, dtype=dtype)
    loader.register(DicomReader())
    return loader


def load_image(path: str | Path) -> MetaTensor:
    """Reads one image (DICOM file, DICOM series folder, NIfTI, PNG) as a channel-first float32 MetaTensor.

    Raises:
        ValueError: For bad DICOM input (see :class:`DicomReader`).

    Example::

        >>> load_image("../shared/data/dicom/ct_series").shape  # 4-slice CT series
        torch.Size([1, 16, 16, 4])
    """
    return image_loader()(str(path))


def loading_transforms(
    keys: str | Sequence[str] = "image", intensity_map: LinearIntensityMap | None = None, dtype: torch.dtype = torch.float32
) -> Compose:
    """``LoadImaged`` (channel first, :class:`DicomReader` registered), the map's ``ScaleIntensityRanged``, ``EnsureTyped``.

    Args:
        keys: image keys.
        intensity_map: raw -> model map (e.g. :func:`datalist_intensity_map`); ``None`` keeps raw values.
        dtype: tensor dtype of the output.

    Returns:
        A MONAI ``Compose`` for data dicts such as those of :func:`load_datalist`.

    Raises:
        ValueError: When ``intensity_map`` has no physical window (MONAI's transform needs one).

    Example::

        >>> t = loading_transforms("image", datalist_intensity_map("phantoms/dataset.json"))
        >>> item = t(load_datalist("phantoms/dataset.json")[0])  # item["image"]: (1, H, W) in [0, 1]
    """
    load = LoadImaged(keys, image_only=True, ensure_channel_first=True)
    load.register(DicomReader())
    steps: list[Any] = [load]
    if intensity_map is not None:
        steps.append(intensity_map.transform(keys))
    steps.append(EnsureTyped(keys, dtype=dtype))
    return Compose(steps)
