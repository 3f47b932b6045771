# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Small functions the bundles' configs call, so that configs stay short and hold no logic of their own."""

from __future__ import annotations

from pathlib import Path

__all__ = ["resolve_datalist"]

DATALIST_NAME = "dataset.json"


def resolve_datalist(
    dataset_dir: str | Path, spatial_dims: int, num_images: int | None = None, size: int | None = None, seed: int = 0
) -> Path:
    """The datalist of ``dataset_dir``: the user's ``dataset.json`` when there is one, else the embedded default.

    When ``dataset_dir`` is absent or empty, the synthetic phantom dataset (2D DICOM / 3D NIfTI) is generated there
    (seconds), so a first run works offline. A folder that holds other files but no ``dataset.json`` is refused:
    build its datalist first (``monai_robust.data.folders`` reads class folders and CSV manifests).

    Args:
        dataset_dir: the data folder.
        spatial_dims: 2 or 3, for the embedded default.
        num_images, size, seed: parameters of the embedded default (see ``generate_phantom_dataset``).

    Returns:
        Path of the datalist JSON.

    Raises:
        ValueError: When ``dataset_dir`` holds data without a ``dataset.json``.

    Example::

        >>> datalist = resolve_datalist("data", spatial_dims=2, num_images=200, size=64)
    """
    from monai_robust.data.synthetic import generate_phantom_dataset  # lazy: keeps `python -m ...synthetic` clean

    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return datalist
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"dataset_dir={str(root)!r} holds files but no {DATALIST_NAME}: write a datalist (MONAI decathlon-style "
            "JSON with 'training'/'validation'/'test', 'classes' and 'intensity_map'), e.g. with "
            "monai_robust.data.folders, or point dataset_dir at an empty folder to use the embedded phantoms."
        )
    return generate_phantom_dataset(root, spatial_dims=spatial_dims, num_images=num_images, size=size, seed=seed)
