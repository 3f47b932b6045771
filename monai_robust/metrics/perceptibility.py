# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""How visible a perturbation is: L-inf and L2 norms in model units and in physical units (HU, stored pixel values,
through :class:`~monai_robust.utils.LinearIntensityMap`), PSNR and SSIM (2D and 3D) with MONAI's ``PSNRMetric``
and ``SSIMMetric``. Every function returns one value per sample ``(N,)``."""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.metrics import PSNRMetric, SSIMMetric

from monai_robust.utils.intensity import LinearIntensityMap

__all__ = ["perceptibility", "perturbation_norms", "psnr", "ssim", "summarize"]


def _pair(clean: Any, adversarial: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(clean).detach().float()
    a = torch.as_tensor(adversarial).detach().float().to(x.device)
    if x.shape != a.shape or x.ndim < 3 or x.shape[0] == 0:
        raise ValueError(
            f"clean and adversarial must be non-empty (N, C, *spatial) batches of one shape, got {tuple(x.shape)} "
            f"and {tuple(a.shape)}."
        )
    return x, a


def _check_range(data_range: float) -> float:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got data_range={data_range!r}.")
    return float(data_range)


def perturbation_norms(
    clean: Any, adversarial: Any, intensity_map: LinearIntensityMap | None = None
) -> dict[str, torch.Tensor]:
    """Per-sample L-inf and L2 norms of ``adversarial - clean``, in model units and, with a map, physical units.

    Args:
        clean: ``(N, C, *spatial)`` images in model-input units.
        adversarial: the perturbed images, same shape.
        intensity_map: the data's model<->physical map; the norms are divided by ``|slope|`` (the map is linear).

    Returns:
        ``{"linf", "l2"}`` and, with a map, ``{"linf_physical", "l2_physical"}``: ``(N,)`` float tensors.

    Raises:
        ValueError: When the shapes differ or are not image batches.

    Example::

        >>> perturbation_norms(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5))["l2"]
        tensor([1.])
    """
    x, a = _pair(clean, adversarial)
    d = (a - x).reshape(x.shape[0], -1)
    out = {"linf": d.abs().amax(dim=1), "l2": d.norm(p=2, dim=1)}
    if intensity_map is not None:
        scale = 1.0 / abs(intensity_map.slope)
        out["linf_physical"] = out["linf"] * scale
        out["l2_physical"] = out["l2"] * scale
    return out


def psnr(clean: Any, adversarial: Any, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio of each adversarial image against its clean image, in dB (MONAI ``PSNRMetric``).

    Args:
        clean: ``(N, C, *spatial)`` reference images.
        adversarial: the perturbed images, same shape.
        data_range: the peak value range, e.g. ``high - low`` of the model-input bounds.

    Returns:
        ``(N,)`` PSNR in dB; ``inf`` where the images are identical.

    Raises:
        ValueError: On shape mismatch or ``data_range <= 0``.

    Example::

        >>> psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1), 1.0)
        tensor([20.])
    """
    x, a = _pair(clean, adversarial)
    return PSNRMetric(max_val=_check_range(data_range), reduction="none")(a, x).reshape(-1)


def ssim(clean: Any, adversarial: Any, data_range: float, win_size: int = 11) -> torch.Tensor:
    """Structural similarity of each adversarial image with its clean image (MONAI ``SSIMMetric``, Gaussian window),
    2D or 3D from the input's rank, averaged over channels.

    Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004,
    https://doi.org/10.1109/TIP.2003.819861

    Args:
        clean: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` reference images.
        adversarial: the perturbed images, same shape.
        data_range: the intensity range ``high - low``.
        win_size: window side; reduced to the largest odd size that fits the smallest spatial side.

    Returns:
        ``(N,)`` SSIM in [-1, 1]; ``nan`` when a spatial side is shorter than 3 voxels.

    Raises:
        ValueError: On shape mismatch, a rank other than 4 or 5, or ``data_range <= 0``.

    Example::

        >>> x = torch.rand(2, 1, 16, 16)
        >>> ssim(x, x, 1.0)
        tensor([1., 1.])
    """
    x, a = _pair(clean, adversarial)
    if x.ndim not in (4, 5):
        raise ValueError(f"ssim needs (N, C, H, W) or (N, C, D, H, W) images, got shape {tuple(x.shape)}.")
    smallest = min(x.shape[2:])
    win = min(int(win_size), smallest if smallest % 2 else smallest - 1)
    if win < 3:
        return torch.full((x.shape[0],), math.nan, device=x.device)
    metric = SSIMMetric(spatial_dims=x.ndim - 2, data_range=_check_range(data_range), win_size=win, reduction="none")
    return metric(a, x).reshape(x.shape[0], -1).mean(dim=1)


def perceptibility(
    clean: Any, adversarial: Any, data_range: float, intensity_map: LinearIntensityMap | None = None
) -> dict[str, torch.Tensor]:
    """Every perceptibility measure of a batch of perturbations, per sample.

    Args:
        clean: ``(N, C, *spatial)`` images in model-input units.
        adversarial: the perturbed images, same shape.
        data_range: the intensity range ``high - low`` (for PSNR and SSIM).
        intensity_map: optional model<->physical map for the physical-unit norms.

    Returns:
        ``{"linf", "l2", ["linf_physical", "l2_physical"], "psnr", "ssim"}``, each ``(N,)``.

    Raises:
        ValueError: On shape mismatch or ``data_range <= 0``.

    Example::

        >>> sorted(perceptibility(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1), 1.0))
        ['l2', 'linf', 'psnr', 'ssim']
    """
    out = perturbation_norms(clean, adversarial, intensity_map)
    out["psnr"] = psnr(clean, adversarial, data_range)
    out["ssim"] = ssim(clean, adversarial, data_range)
    return out


def summarize(values: Any) -> dict[str, float]:
    """Mean, median and max of the finite values of a per-sample tensor (``nan``/``inf`` are left out).

    Args:
        values: ``(N,)`` per-sample values.

    Returns:
        ``{"n", "mean", "median", "max"}``; ``n`` counts the finite values and the statistics are ``nan`` when
        there is none.

    Example::

        >>> summarize(torch.tensor([1.0, 3.0, float("inf"), float("nan")]))
        {'n': 2, 'mean': 2.0, 'median': 2.0, 'max': 3.0}
    """
    v = torch.as_tensor(values).detach().float().reshape(-1)
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return {"n": 0, "mean": math.nan, "median": math.nan, "max": math.nan}
    return {"n": int(v.numel()), "mean": float(v.mean()), "median": float(v.quantile(0.5)), "max": float(v.max())}
