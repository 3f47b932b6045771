# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Fixed perturbations δ on disk: a ``.pt`` file holding the tensor (or a dict with it under ``"delta"`` and the
record of how it was made), with a picture beside it (a PNG for 2D, a NIfTI for 3D).

:func:`save_perturbation` writes both (the ``.pt`` atomically); :func:`read_perturbation_record` reads the dict back
and :func:`load_perturbation` reads δ alone from a file, a tensor or an ndarray (what
:class:`~monai_robust.transforms.ApplyPerturbation` and :class:`~monai_robust.attacks.fixed_perturbation.UAPResult`
use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor, optional_import

from monai_robust.utils.files import atomic_torch_save, load_torch_file

__all__ = ["load_perturbation", "read_perturbation_record", "save_perturbation"]


def save_perturbation(record: Mapping[str, Any], path: str | os.PathLike, view: bool = True) -> list[Path]:
    """Writes a perturbation record (a dict with the tensor ``(C, *spatial)`` under ``"delta"``) to ``path`` and,
    with ``view``, a picture of δ beside it: a PNG for 2D (gray 128 = 0, symmetric scale ``±max|δ|``, channels side
    by side; needs pillow) or a NIfTI ``.nii.gz`` for 3D (values in model-input units, identity affine, channels
    last).

    Args:
        record: ``{"delta": tensor, ...}``; the other entries are plain Python values.
        path: the ``.pt`` file (folders created).
        view: also write the picture.

    Returns:
        The paths written.

    Raises:
        ValueError: When ``path`` does not end in ``.pt``, ``record`` has no tensor ``"delta"``, or a view is asked
            for a δ that is neither 2D nor 3D.
        ModuleNotFoundError: When the PNG view needs pillow and it is missing.

    Example::

        >>> save_perturbation({"delta": torch.zeros(1, 28, 28), "eps": 0.5}, "uap.pt")  # uap.pt + uap.png
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"path must end in .pt, got {str(path)!r}.")
    if not isinstance(record.get("delta"), torch.Tensor):
        raise ValueError(f"record must hold the perturbation tensor under 'delta', got keys {list(record)}.")
    written = [atomic_torch_save(dict(record), path)]
    if view:
        written.append(_save_view(record["delta"], path.with_suffix("")))
    return written


def read_perturbation_record(path: str | os.PathLike) -> dict[str, Any]:
    """The dict a ``.pt`` perturbation file holds (a bare tensor is returned as ``{"delta": tensor}``).

    Raises:
        ValueError: When the file does not exist, cannot be read (:class:`~monai_robust.utils.CorruptFileError`) or
            holds neither a tensor nor a dict with a tensor under ``"delta"`` (the file is named).

    Example::

        >>> read_perturbation_record("uap.pt")["eps"]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"perturbation file {str(path)!r} does not exist.")
    obj = load_torch_file(path, "perturbation file")
    if isinstance(obj, torch.Tensor):
        return {"delta": obj}
    if not isinstance(obj, Mapping):
        raise ValueError(f"perturbation file {str(path)!r} holds a {type(obj).__name__}, not a tensor.")
    if "delta" not in obj:
        raise ValueError(f"perturbation file {str(path)!r} holds a dict without 'delta' (keys: {list(obj)}).")
    if not isinstance(obj["delta"], torch.Tensor):
        raise ValueError(f"perturbation file {str(path)!r} holds a {type(obj['delta']).__name__} under 'delta', not a tensor.")
    return dict(obj)


def load_perturbation(delta: Any) -> tuple[torch.Tensor, str]:
    """Reads a fixed perturbation from a Tensor, an ndarray or a ``.pt`` file.

    Args:
        delta: Tensor/ndarray/MetaTensor of shape ``(C, *spatial)`` or ``(1, C, *spatial)``, or the path of a
            ``.pt`` file holding such a tensor (or a dict with the tensor under ``"delta"``).

    Returns:
        ``(delta, source)``: a float tensor on the CPU and where it came from (the path, ``"tensor"`` or
        ``"ndarray"``).

    Raises:
        ValueError: When the file does not exist, cannot be read or holds no tensor, or δ has fewer than 2
            dimensions, is empty or contains NaN/Inf.

    Example::

        >>> delta, source = load_perturbation(torch.zeros(1, 28, 28))
        >>> source
        'tensor'
    """
    if isinstance(delta, (str, os.PathLike)):
        source, t = str(Path(delta)), read_perturbation_record(delta)["delta"]
    elif isinstance(delta, (torch.Tensor, np.ndarray)):
        source = "ndarray" if isinstance(delta, np.ndarray) else "tensor"
        t = convert_to_tensor(delta, track_meta=False)
    else:
        raise ValueError(f"delta must be a Tensor, an ndarray or the path of a .pt file, got {type(delta).__name__}.")
    t = t.detach().to("cpu")
    t = t if t.is_floating_point() else t.float()
    if t.ndim < 2 or t.numel() == 0:
        raise ValueError(f"delta must be (C, *spatial) or (1, C, *spatial), got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"delta contains {int((~torch.isfinite(t)).sum())} NaN/Inf values.")
    return t, source


def _save_view(delta: torch.Tensor, stem: Path) -> Path:
    d = delta.detach().cpu().float()
    if d.ndim == 4:  # (C, D, H, W) -> NIfTI (D, H, W[, C])
        import nibabel as nib

        arr = d.permute(1, 2, 3, 0).numpy()
        out = stem.with_name(stem.name + ".nii.gz")
        nib.save(nib.Nifti1Image(arr[..., 0] if arr.shape[-1] == 1 else arr, np.eye(4)), str(out))
        return out
    if d.ndim != 3:
        raise ValueError(f"a view is written for 2D (C, H, W) or 3D (C, D, H, W) delta, got shape {tuple(d.shape)}.")
    pil, has_pil = optional_import("PIL.Image")
    if not has_pil:
        raise ModuleNotFoundError("the PNG view of a 2D UAP needs pillow: pip install pillow, or save(view=False).")
    scale = float(d.abs().max()) or 1.0
    img = (128 + 127 * d / scale).round().clamp(0, 255).to(torch.uint8)
    arr = img.permute(1, 2, 0).numpy() if d.shape[0] == 3 else torch.cat(list(img), dim=1).numpy()
    out = stem.with_name(stem.name + ".png")
    pil.fromarray(arr).save(out)
    return out
