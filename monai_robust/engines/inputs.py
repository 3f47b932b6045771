# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""What :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` checks and prepares before attacking: the
labels of a batch, the data range of the first batch against every box, the universal perturbations given, and the
random-noise controls of each white-box budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.utils import convert_to_tensor

from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.threat import _check_bounds
from monai_robust.utils.enums import LpNorm, as_lp

__all__ = ["build_uaps", "check_data_range", "check_labels", "middle_slice", "noise_like"]


def check_labels(labels: Any, n: int, device: torch.device | None) -> torch.Tensor:
    """``(N,)`` long class indices on ``device`` from ``(N,)`` or ``(N, 1)`` labels.

    Raises:
        ValueError: For one-hot / multi-label labels, a wrong count, or non-integral values.
    """
    y = convert_to_tensor(labels, track_meta=False)
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"labels of shape {tuple(y.shape)} look multi-label or one-hot; the evaluator needs (N,) class indices."
        )
    if y.ndim > 2 or y.numel() != n:
        raise ValueError(f"labels must be (N,) or (N, 1) class indices with N={n}, got shape {tuple(y.shape)}.")
    y = y.reshape(-1)
    if torch.is_floating_point(y) and not bool((y == y.round()).all()):
        raise ValueError("labels must be integral class indices, got non-integral values.")
    return y.long().to(device)


def check_data_range(x: torch.Tensor, boxes: Sequence[tuple[str, tuple[float, float]]], coverage: bool) -> None:
    """Refuses a first batch outside any of ``boxes`` ``[(who, (low, high))]``, or (``coverage``) covering under 5 %
    of one: the bounds and ε are then probably in other units than the data.

    Raises:
        ValueError: Naming the box and the data range.
    """
    lo, hi = float(x.min()), float(x.max())
    for who, (blo, bhi) in boxes:
        tol = 1e-5 * (bhi - blo)
        if lo < blo - tol or hi > bhi + tol:
            raise ValueError(
                f"the data range [{lo:g}, {hi:g}] of the first batch lies outside the bounds {(blo, bhi)} of "
                f"{who!r}: configure the attack's bounds in the model-input units of the data."
            )
        if coverage and (hi - lo) < 0.05 * (bhi - blo):
            raise ValueError(
                f"the data range [{lo:g}, {hi:g}] of the first batch covers under 5% of the bounds {(blo, bhi)} "
                f"of {who!r}: the bounds (and eps) are probably in other units than the data (e.g. 0-255 vs "
                "0-1). Set EvaluationOptions(check_data_range=False) if this is intended."
            )


def build_uaps(uaps: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"delta", "lp", "eps", "target", "bounds", "zeta"}}`` from tensors or ``UAPResult``-like objects.

    Raises:
        ValueError: On a bad name or a δ that is not a finite ``(C, *spatial)`` tensor.
    """
    out = {}
    for name, value in uaps.items():
        if not isinstance(name, str) or not name or "@" in name:
            raise ValueError(f"UAP names must be non-empty strings without '@', got {name!r}.")
        d = convert_to_tensor(getattr(value, "delta", value), track_meta=False)
        d = d if isinstance(d, torch.Tensor) else torch.as_tensor(d)
        if d.ndim < 2 or d.numel() == 0 or not bool(torch.isfinite(d).all()):
            raise ValueError(f"UAP {name!r} must be a finite (C, *spatial) tensor, got shape {tuple(d.shape)}.")
        lp = as_lp(getattr(value, "lp", 2) or 2)
        eps = getattr(value, "eps", None)
        out[name] = {
            "delta": d.float(),
            "lp": lp,
            "eps": float(eps) if eps is not None else float(lp_norm(d.reshape(1, -1), lp)[0]),
            "target": getattr(value, "target", None),
            "bounds": _check_bounds(getattr(value, "bounds", None)),
            "zeta": getattr(value, "zeta", None),
        }
    return out


def noise_like(x: torch.Tensor, eps: float, lp: LpNorm, generator: torch.Generator) -> torch.Tensor:
    """Random noise of Lp norm ``eps`` per sample: signs at ``±eps`` (L-inf), a Gaussian (L2) or Laplace (L1)
    direction.

    Example::

        >>> noise_like(torch.zeros(2, 1, 4, 4), 0.1, LpNorm.LINF, torch.Generator()).abs().max()
        tensor(0.1000)
    """
    if lp == LpNorm.LINF:
        return (torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1) * eps
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if lp == LpNorm.L1:
        g = g.sign() * torch.empty_like(g).exponential_(generator=generator)
    norms = lp_norm(g, lp).clamp_min(1e-12)
    return g * (eps / norms).reshape((-1,) + (1,) * (x.ndim - 1))


def middle_slice(x: torch.Tensor) -> torch.Tensor:
    """``(k, C, *spatial)`` -> ``(k, C, H, W)`` on the CPU: the middle slice of the first spatial axis for 3D."""
    x = x.detach().float().cpu().clone()
    while x.ndim > 4:
        x = x.select(2, x.shape[2] // 2)
    return x
