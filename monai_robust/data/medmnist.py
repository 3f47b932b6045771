# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""MedMNIST ``.npz`` files (2D and 3D, every size, grayscale and RGB, multi-label) as MONAI data dicts and Datasets.

Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification",
Scientific Data 2023, https://doi.org/10.1038/s41597-022-01721-8

A MedMNIST file holds ``{train,val,test}_images`` (uint8; ``(N, H, W)`` grayscale 2D, ``(N, H, W, 3)`` RGB 2D,
``(N, D, H, W)`` 3D) and ``{train,val,test}_labels`` (``(N, 1)`` class index, or ``(N, K)`` 0/1 for the
multi-label sets such as ChestMNIST). Images become channel-first ``(C, *spatial)``; the raw -> model map is
:data:`MEDMNIST_INTENSITY` (grey level ``[0, 255] -> [0, 1]``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose
from monai.utils import optional_import

from monai_robust.utils.intensity import LinearIntensityMap

__all__ = [
    "MEDMNIST_INTENSITY",
    "MEDMNIST_SPLITS",
    "download_medmnist",
    "medmnist_datalist",
    "medmnist_dataset",
    "medmnist_tensors",
    "read_medmnist",
]

MEDMNIST_SPLITS = ("train", "val", "test")
MEDMNIST_INTENSITY = LinearIntensityMap.from_window(0.0, 255.0, units="grey level (uint8)")


def read_medmnist(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The raw images and labels of one split.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        ``images``: uint8, channel first ``(N, C, *spatial)`` (a view for RGB, no copy); ``labels``: int64,
        ``(N,)`` class indices, or ``(N, K)`` 0/1 vectors for a multi-label set.

    Raises:
        ValueError: When ``split`` is unknown, the file is missing or not an ``.npz``, a key
            ``{split}_images``/``{split}_labels`` is missing (the message names the file and the key), or the
            arrays disagree in length or have an unexpected rank.

    Example::

        >>> images, labels = read_medmnist("../shared/data/pneumoniamnist.npz", "test")
        >>> images.shape, labels.shape
        ((624, 1, 28, 28), (624,))
    """
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"split must be one of {MEDMNIST_SPLITS}, got split={split!r}.")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: MedMNIST file not found.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}).") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an .npz archive with {split}_images and {split}_labels.")
    with archive:
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in archive.files:
                raise ValueError(f"{path}: missing key {key!r} (keys in the file: {sorted(archive.files)}).")
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    if len(images) != len(labels):
        raise ValueError(f"{path}: {split}_images has {len(images)} entries but {split}_labels has {len(labels)}.")
    if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:  # (N, H, W, 3) RGB 2D
        images = np.moveaxis(images, -1, 1)
    elif images.ndim in (3, 4):  # (N, H, W) grayscale 2D or (N, D, H, W) 3D
        images = images[:, None]
    else:
        raise ValueError(f"{path}: {split}_images has shape {images.shape}; expected (N,H,W), (N,H,W,3) or (N,D,H,W).")
    labels = labels.astype(np.int64).reshape(len(labels), -1)
    return images, (labels[:, 0] if labels.shape[1] == 1 else labels)


def medmnist_tensors(path: str | Path, split: str = "train", limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as tensors, for code that batches in memory (the tutorials and benchmarks).

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        limit: keep the first ``limit`` images (``None``: all).

    Returns:
        ``images``: float32 ``(N, C, *spatial)`` in ``[0, 1]`` (grey level / 255, as :data:`MEDMNIST_INTENSITY`);
        ``labels``: int64 as :func:`read_medmnist` returns them.

    Raises:
        ValueError: As :func:`read_medmnist`; when ``limit`` is negative.

    Example::

        >>> x, y = medmnist_tensors("../shared/data/pneumoniamnist.npz", "val", limit=100)
        >>> x.shape, y.shape, float(x.max()) <= 1.0
        (torch.Size([100, 1, 28, 28]), torch.Size([100]), True)
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got limit={limit!r}.")
    images, labels = read_medmnist(path, split)
    return torch.from_numpy(images[:limit]).float().div(255), torch.from_numpy(labels[:limit])


def _items(images: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    if labels.ndim == 1:
        return [{"image": img, "label": int(lab)} for img, lab in zip(images, labels)]
    return [{"image": img, "label": lab} for img, lab in zip(images, labels)]


def medmnist_datalist(path: str | Path, split: str = "train", scale: bool = True) -> list[dict[str, Any]]:
    """One split as MONAI data dicts ``{"image": (C, *spatial) float32, "label": int or (K,) int64}``.

    The whole split is converted at once (float32 copy); for large files prefer :func:`medmnist_dataset`.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        scale: apply :data:`MEDMNIST_INTENSITY` (values in ``[0, 1]``); ``False`` keeps grey levels 0..255.

    Returns:
        The list of data dicts.

    Raises:
        ValueError: As :func:`read_medmnist`.

    Example::

        >>> items = medmnist_datalist("../shared/data/pneumoniamnist.npz", "val")
        >>> items[0]["image"].shape, items[0]["label"]
        ((1, 28, 28), 1)
    """
    images, labels = read_medmnist(path, split)
    images = images.astype(np.float32)
    if scale:
        images = MEDMNIST_INTENSITY.to_model(images).astype(np.float32)
    return _items(images, labels)


def medmnist_dataset(
    path: str | Path, split: str = "train", transform: Callable | None = None, scale: bool = True
) -> Dataset:
    """One split as a ``monai.data.Dataset``; each item is converted to float32 (and scaled) when it is read.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: MONAI dict transform applied after the conversion.
        scale: apply :data:`MEDMNIST_INTENSITY`'s ``ScaleIntensityRanged`` (``[0, 1]``); ``False``: grey levels.

    Returns:
        A Dataset of ``{"image": float32 (C, *spatial), "label": ...}`` dicts.

    Raises:
        ValueError: As :func:`read_medmnist`.

    Example::

        >>> ds = medmnist_dataset("../shared/data/adrenalmnist3d.npz", "test")
        >>> ds[0]["image"].shape
        (1, 28, 28, 28)
    """
    images, labels = read_medmnist(path, split)
    steps: list[Callable] = [MEDMNIST_INTENSITY.transform("image") if scale else _to_float32]
    if transform is not None:
        steps.append(transform)
    return Dataset(_items(images, labels), transform=Compose(steps))


def _to_float32(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "image": np.asarray(item["image"], dtype=np.float32)}


def download_medmnist(flag: str, root: str | Path, size: int = 28) -> Path:
    """Downloads a MedMNIST file with the ``medmnist`` package (needs it installed and internet access).

    Args:
        flag: the MedMNIST name, e.g. ``"pneumoniamnist"`` or ``"adrenalmnist3d"``.
        root: folder to download into.
        size: 28, 64, 128 or 224 (2D) / 28 or 64 (3D).

    Returns:
        The path of the ``.npz`` file.

    Raises:
        ImportError: When ``medmnist`` is not installed.
        ValueError: When ``flag`` is not a MedMNIST name.
    """
    medmnist, has_medmnist = optional_import("medmnist")
    if not has_medmnist:
        raise ImportError("download_medmnist needs the 'medmnist' package (pip install medmnist) and internet access.")
    if flag not in medmnist.INFO:
        raise ValueError(f"flag must be a MedMNIST name such as 'pneumoniamnist', got flag={flag!r}.")
    Path(root).mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    data_class(split="train", download=True, root=str(root), size=size)
    return Path(root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
