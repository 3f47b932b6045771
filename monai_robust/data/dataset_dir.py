# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The datalist of a bundle's ``dataset_dir``: the user's ``dataset.json``, or, only when asked for, the embedded
synthetic phantom dataset.

Not imported by ``monai_robust.data`` itself (it imports :mod:`monai_robust.data.synthetic`, which is also a
command-line module): use ``monai_robust.data.dataset_dir.resolve_datalist`` or ``monai_robust.data.resolve_datalist``.
"""

from __future__ import annotations

from pathlib import Path

from monai_robust.data.synthetic import generate_phantom_dataset

__all__ = ["DATALIST_NAME", "SYNTHETIC", "resolve_datalist"]

DATALIST_NAME = "dataset.json"
"""File name of a dataset folder's datalist."""
SYNTHETIC = "synthetic"
"""The ``dataset_dir`` keyword that asks for the embedded phantoms in the bundle's default folder."""


def resolve_datalist(
    dataset_dir: str | Path,
    spatial_dims: int,
    num_images: int | None = None,
    size: int | None = None,
    seed: int = 0,
    synthetic: bool = False,
    synthetic_dir: str | Path | None = None,
) -> Path:
    """The datalist of ``dataset_dir``: the user's ``dataset.json`` when there is one; the embedded synthetic
    phantom dataset (2D DICOM / 3D NIfTI, generated in seconds) only when asked for.

    Asking for the phantoms: ``synthetic=True`` (generated in ``dataset_dir``, which must be absent or empty, or
    already hold the same phantoms), or ``dataset_dir="synthetic"`` (generated in ``synthetic_dir``). A mistyped
    folder is therefore an error, never a silently generated dataset.

    Args:
        dataset_dir: the data folder, or ``"synthetic"``.
        spatial_dims: 2 or 3, for the embedded default.
        num_images, size, seed: parameters of the embedded default (see ``generate_phantom_dataset``).
        synthetic: generate the phantoms in ``dataset_dir`` when it has no datalist.
        synthetic_dir: where ``dataset_dir="synthetic"`` puts the phantoms.

    Returns:
        Path of the datalist JSON.

    Raises:
        FileNotFoundError: When ``dataset_dir`` does not exist, or is empty, and the phantoms were not asked for.
        ValueError: When ``dataset_dir`` holds data without a ``dataset.json``, or ``"synthetic"`` is given
            without ``synthetic_dir``.

    Example::

        >>> datalist = resolve_datalist("data", spatial_dims=2, num_images=200, size=64, synthetic=True)
    """
    if str(dataset_dir) == SYNTHETIC:
        if synthetic_dir is None:
            raise ValueError(f"dataset_dir={SYNTHETIC!r} needs synthetic_dir, the folder to write the phantoms to.")
        dataset_dir, synthetic = synthetic_dir, True
    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return datalist
    if root.is_dir() and any(root.iterdir()):
        raise ValueError(
            f"dataset_dir={str(root)!r} holds files but no {DATALIST_NAME}: write a datalist (MONAI decathlon-style "
            "JSON with 'training'/'validation'/'test', 'classes' and 'intensity_map'), e.g. with "
            "monai_robust.data.folders, or point dataset_dir at an empty folder and ask for the embedded phantoms."
        )
    if not synthetic:
        state = "is empty" if root.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"dataset_dir={str(root)!r} {state}: give the folder of your {DATALIST_NAME}, or ask for the embedded "
            f"synthetic phantoms explicitly (bundles: --synthetic True, or --dataset_dir {SYNTHETIC})."
        )
    return generate_phantom_dataset(root, spatial_dims=spatial_dims, num_images=num_images, size=size, seed=seed)
