# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The data a ``monai-robust`` command is pointed at, as MONAI data dicts with labels in the bundle's class order,
loaded through the bundle's own loading part (stored units): a MONAI datalist JSON (a zoo list of dicts or a
decathlon-style file with splits), a class-folder tree, a CSV manifest, a DICOM folder or a single image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import DataLoader, Dataset, load_decathlon_datalist

from monai_robust.data.folders import check_image, datalist_from_csv, datalist_from_folders
from monai_robust.data.image_reader import is_dicom_input

__all__ = ["bundle_loader", "read_items"]


def _remap(items: list[dict[str, Any]], data_classes: Sequence[str], bundle_classes: Sequence[str], where: str) -> list[dict[str, Any]]:
    """Labels indexing ``data_classes`` -> indices into ``bundle_classes`` (by name, or as integers ``"0"``, ``"1"``)."""
    if not bundle_classes or list(data_classes) == list(bundle_classes):
        return items
    index = {str(c): i for i, c in enumerate(bundle_classes)}
    index.update({str(i): i for i in range(len(bundle_classes))})
    unknown = [c for c in data_classes if str(c) not in index]
    if unknown:
        raise ValueError(f"{where}: classes {unknown} are not the bundle's {list(bundle_classes)} (nor indices).")
    return [{**it, "label": index[str(data_classes[int(it["label"])])]} for it in items]


def _json_items(path: Path, split: str | None) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e
    if isinstance(data, list):  # a zoo datalist: [{"image": ..., "label": ...}]
        base = path.parent
        return [{**d, "image": str(d["image"] if Path(d["image"]).is_absolute() else base / d["image"])} for d in data]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a list of data dicts or a decathlon-style datalist, got {type(data).__name__}.")
    splits = [split] if split else [k for k in ("test", "validation", "training") if isinstance(data.get(k), list)][:1]
    if not splits or not isinstance(data.get(splits[0]), list):
        raise ValueError(f"{path}: no list {split or 'test/validation/training'!r}; keys: {sorted(data)}.")
    return load_decathlon_datalist(path, is_segmentation=False, data_list_key=splits[0])


def read_items(source: str | Path, class_names: Sequence[str] = (), split: str | None = None) -> list[dict[str, Any]]:
    """Data dicts ``{"image": path, "label": index}`` (no ``label`` for unlabelled images) from ``source``.

    Args:
        source: a datalist JSON, a CSV manifest (``image,label``), a class-folder tree (``root/<class>/<image>``), a
            DICOM folder (one series, unlabelled) or one image file (unlabelled).
        class_names: the bundle's classes; labels given by name are mapped onto them.
        split: for a decathlon-style datalist: the split (default the first of test, validation, training).

    Returns:
        The data dicts, paths absolute.

    Raises:
        ValueError: When ``source`` does not exist, is of no known kind, or names classes the bundle lacks.

    Example::

        >>> read_items("label/test_samples.json")[0]
        {'image': '/data/inbody/0001.jpg', 'label': 0}
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"data {str(path)!r} does not exist.")
    if path.is_file() and path.suffix.lower() == ".json":
        return _json_items(path, split)
    if path.is_file() and path.suffix.lower() == ".csv":
        d = datalist_from_csv(path, validate=False)
        return _remap(d.items, d.classes, class_names, str(path))
    if path.is_dir():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if subdirs and not any(is_dicom_input(f) for f in files):
            d = datalist_from_folders(path, validate=False)
            return _remap(d.items, d.classes, class_names, str(path))
        return [{"image": str(path)}]  # a DICOM series folder
    check_image(path, validate=False)
    return [{"image": str(path)}]


def bundle_loader(
    items: list[dict[str, Any]], loading: Any, batch_size: int = 8, num_workers: int = 0, shuffle: bool = False
) -> DataLoader:
    """A MONAI ``DataLoader`` of ``items`` through the bundle's loading part (stored units).

    Example::

        >>> loader = bundle_loader(read_items("test.json"), split_preprocessing(bundle.preprocessing).loading)
    """
    if not items:
        raise ValueError("the data holds no image.")
    return DataLoader(Dataset(items, transform=loading), batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
