# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Perturbed images back in their stored form: quantised to the stored integers without leaving the ε ball, then
written losslessly with MONAI's writers (PNG for 8/16-bit 2D images, NIfTI for any dtype), so that re-loading them
through the bundle's own loading part gives back exactly the perturbed values.

JPEG is lossy: a perturbed JPEG frame is written as PNG (the same pixels, lossless), never re-encoded as JPEG, whose
compression would change the perturbation by more than ε."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, NibabelWriter, PILWriter

__all__ = ["quantize_toward", "write_stored"]

_NIFTI = (".nii", ".nii.gz")


def quantize_toward(adversarial: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Integer stored values for ``adversarial``: each perturbation is truncated toward zero, so for integer-valued
    ``clean`` images ``|q - clean| <= |adversarial - clean|`` element-wise and the ε ball (any Lp) and the box
    ``[low, high]`` (integer bounds) still hold.

    Raises:
        ValueError: When ``clean`` is not integer-valued or the shapes differ.

    Example::

        >>> quantize_toward(torch.tensor([10.7, 9.2]), torch.tensor([10.0, 10.0]))
        tensor([10., 10.])
    """
    a, c = torch.as_tensor(adversarial).as_subclass(torch.Tensor), torch.as_tensor(clean).as_subclass(torch.Tensor)
    if a.shape != c.shape:
        raise ValueError(f"adversarial {tuple(a.shape)} and clean {tuple(c.shape)} images differ in shape.")
    if not bool((c == c.round()).all()):
        raise ValueError("the clean image is not integer-valued: it is not in stored units.")
    return c + torch.trunc(a.detach() - c)


def write_stored(image: Any, path: str | Path, dtype: Any = np.uint8) -> Path:
    """Writes a channel-first image in stored units as loaded by the bundle (a ``MetaTensor`` whose metadata came
    from ``LoadImage``), losslessly, so that the same loading transforms read it back unchanged.

    Args:
        image: ``(C, *spatial)`` stored values with the loader's metadata (affine, original channel dim).
        path: ``.png`` (8-bit, or 16-bit single channel) or ``.nii`` / ``.nii.gz`` (any ``dtype``).
        dtype: the stored dtype (``numpy.uint8`` for 8-bit images, ``numpy.int16`` for HU, ...).

    Returns:
        ``path``.

    Raises:
        ValueError: For a lossy or unknown format (``.jpg``: write ``.png``), or values that ``dtype`` cannot hold.

    Example::

        >>> write_stored(MetaTensor(q, meta=clean.meta), "adv.png")
    """
    path = Path(path)
    name = path.name.lower()
    x = image if isinstance(image, MetaTensor) else MetaTensor(torch.as_tensor(image))
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    values = x.as_subclass(torch.Tensor)
    if info is not None and (bool((values != values.round()).any()) or float(values.min()) < info.min or float(values.max()) > info.max):
        raise ValueError(f"{path}: values {float(values.min()):g}..{float(values.max()):g} are not {np.dtype(dtype).name} integers: quantise first.")
    if name.endswith((".jpg", ".jpeg")):
        raise ValueError(f"{path}: JPEG is lossy and would change the perturbation; write a .png instead.")
    if name.endswith(".png"):
        writer: Any = PILWriter(output_dtype=dtype, scale=None)
    elif name.endswith(_NIFTI):
        writer = NibabelWriter(output_dtype=dtype)
    else:
        raise ValueError(f"{path}: write .png, .nii or .nii.gz (lossless).")
    writer.set_data_array(x, channel_dim=0, squeeze_end_dims=True)
    writer.set_metadata(dict(x.meta), resample=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write(str(path), verbose=False)
    return path
