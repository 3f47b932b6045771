# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The threat model (an Lp budget in model-input units and the box of valid inputs) and the argument checks that
every attack shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor
from torch import nn

from monai_robust.attacks.functional import lp_norm
from monai_robust.utils.enums import LpNorm, as_lp
from monai_robust.utils.intensity import LinearIntensityMap

__all__ = ["ThreatModel"]


@dataclass(frozen=True)
class ThreatModel:
    """An attacker's budget: radius ``eps`` of an Lp ball in model-input units, and the box ``bounds``.

    Build it directly in model units, from a budget in physical units through the data's
    :class:`~monai_robust.utils.LinearIntensityMap`, or as the ζ budget of the universal-perturbation
    papers (Hirano et al. 2021): ``eps = ζ · mean ||x||_p`` over reference images.

    Args:
        eps: radius in model-input units (>= 0).
        lp: ``"inf"``, ``2`` or ``1``.
        bounds: ``(low, high)`` of valid model inputs, or ``None`` for no box constraint.
        description: how the budget was stated (e.g. ``"20 HU"``, ``"zeta=4%"``), kept for reports.

    Raises:
        ValueError: When ``eps`` is negative or not finite, or ``bounds`` is not ``low < high``.

    Example::

        >>> from monai_robust.utils import LinearIntensityMap
        >>> tm = ThreatModel.from_physical(20.0, LinearIntensityMap.from_window(-1000, 1000, units="HU"))
        >>> tm.eps, tm.bounds
        (0.01, (0.0, 1.0))
    """

    eps: float
    lp: LpNorm = LpNorm.LINF
    bounds: tuple[float, float] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lp", as_lp(self.lp))
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))
        object.__setattr__(self, "eps", _check_eps(self.eps, self.lp, self.bounds))

    @classmethod
    def from_physical(
        cls, eps: float, intensity_map: LinearIntensityMap, lp: str | float = "inf"
    ) -> ThreatModel:
        """A budget of ``eps`` physical units (HU, stored values), bounds from the map's output range."""
        return cls(
            intensity_map.eps_to_model(_check_eps(eps)), lp, intensity_map.bounds, f"{eps:g} {intensity_map.units}"
        )

    @classmethod
    def from_zeta(
        cls, zeta: float, images: torch.Tensor, lp: str | float = 2, bounds: tuple[float, float] | None = None
    ) -> ThreatModel:
        """The ζ budget: ``eps = zeta * mean_i ||x_i||_p`` over ``images`` ``(N, C, *spatial)``.

        Raises:
            ValueError: When ``zeta <= 0`` or ``images`` is empty.
        """
        if not (isinstance(zeta, (int, float)) and zeta > 0 and math.isfinite(zeta)):
            raise ValueError(f"zeta must be a finite number > 0, got zeta={zeta!r}.")
        x = convert_to_tensor(images, track_meta=False, dtype=torch.float32)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"images must be a non-empty batch (N, C, *spatial), got shape {tuple(x.shape)}.")
        eps = float(zeta) * float(lp_norm(x, lp).mean())
        return cls(eps, lp, bounds, f"zeta={zeta:g} (L{as_lp(lp).value})")


def _unpack_threat(network: Any, eps: Any, lp: Any, bounds: Any) -> tuple[Any, Any, Any]:
    """Checks ``network`` and takes ``eps``/``lp``/``bounds`` from a :class:`ThreatModel` (explicit values win)."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    if isinstance(eps, ThreatModel):
        return eps.eps, eps.lp if lp is None else lp, eps.bounds if bounds is None else bounds
    return eps, lp, bounds


def _check_eps(eps: Any, lp: Any = None, bounds: tuple[float, float] | None = None) -> float:
    """The one check of a budget: a finite number >= 0 (a one-element tensor or array too); with ``lp="inf"`` and
    ``bounds``, at most the box width (a budget in other units than the data, e.g. 8 for 8/255, is refused).

    Raises:
        ValueError: When ``eps`` is not a finite number >= 0 or exceeds the L-inf box width.
    """
    if isinstance(eps, (torch.Tensor, np.ndarray, np.generic)) and np.size(eps) == 1:
        eps = float(eps)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got eps={eps!r}.")
    if lp is not None and bounds is not None and as_lp(lp) == LpNorm.LINF and eps > bounds[1] - bounds[0]:
        raise ValueError(
            f"L-inf eps={eps:g} is larger than the bounds {tuple(bounds)} allow (width {bounds[1] - bounds[0]:g}): "
            "give eps in model-input units (e.g. 8/255, not 8)."
        )
    return float(eps)


def _check_bounds(bounds: Any) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bounds must be (low, high) or None, got bounds={bounds!r}.") from e
    if not (lo < hi):
        raise ValueError(f"bounds must satisfy low < high, got bounds={bounds!r}.")
    return (lo, hi)


def _check_positive_int(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}.")
    return int(value)


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {name}={value!r}.")
    return float(value)
