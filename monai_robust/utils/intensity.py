# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The linear map from physical intensities (HU, stored pixel values) to model-input units.

Attack budgets are given in model-input units; this map converts a budget stated in physical units
(for instance "20 HU") into model units and back, and gives the model-input bounds that attacks clip to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from monai.transforms import ScaleIntensityRanged

__all__ = ["LinearIntensityMap"]


@dataclass(frozen=True)
class LinearIntensityMap:
    """``model = slope * physical + intercept``, with the physical window that the preprocessing keeps.

    Args:
        slope: model units per physical unit (non-zero).
        intercept: model value of physical zero.
        physical_range: ``(low, high)`` physical window kept by the preprocessing (values outside are clipped
            by it), or ``None`` when the preprocessing does not clip.
        units: name of the physical unit, e.g. ``"HU"`` or ``"stored value"``.

    Raises:
        ValueError: When ``slope`` is zero or not finite, or ``physical_range`` is empty.

    Example::

        >>> m = LinearIntensityMap.from_window(-1000, 400, units="HU")  # CT lung window to [0, 1]
        >>> round(m.eps_to_model(14.0), 6)
        0.01
    """

    slope: float
    intercept: float = 0.0
    physical_range: tuple[float, float] | None = None
    units: str = "physical"

    def __post_init__(self) -> None:
        if not self.slope or self.slope != self.slope or abs(self.slope) == float("inf"):
            raise ValueError(f"slope must be finite and non-zero, got slope={self.slope!r}.")
        if self.physical_range is not None:
            lo, hi = (float(v) for v in self.physical_range)
            if not lo < hi:
                raise ValueError(f"physical_range must satisfy low < high, got physical_range={self.physical_range!r}.")
            object.__setattr__(self, "physical_range", (lo, hi))

    @classmethod
    def from_window(
        cls, a_min: float, a_max: float, b_min: float = 0.0, b_max: float = 1.0, units: str = "physical"
    ) -> LinearIntensityMap:
        """The map of MONAI's ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)``.

        Raises:
            ValueError: When ``a_min == a_max`` or ``b_min == b_max``.
        """
        if a_min == a_max or b_min == b_max:
            raise ValueError(f"window must be non-empty, got a=({a_min}, {a_max}), b=({b_min}, {b_max}).")
        slope = (b_max - b_min) / (a_max - a_min)
        return cls(slope=slope, intercept=b_min - a_min * slope, physical_range=(a_min, a_max), units=units)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Model-input bounds ``(low, high)`` implied by the physical window, or ``None`` when unclipped."""
        if self.physical_range is None:
            return None
        lo, hi = (self.to_model(v) for v in self.physical_range)
        return (min(lo, hi), max(lo, hi))

    def to_model(self, value: Any) -> Any:
        """Physical value(s) to model units (works on floats, arrays and tensors)."""
        return value * self.slope + self.intercept

    def to_physical(self, value: Any) -> Any:
        """Model-unit value(s) back to physical units."""
        return (value - self.intercept) / self.slope

    def eps_to_model(self, eps: float) -> float:
        """A perturbation size in physical units to model units (any Lp norm: the map is linear)."""
        return float(eps) * abs(self.slope)

    def eps_to_physical(self, eps: float) -> float:
        """A perturbation size in model units to physical units."""
        return float(eps) / abs(self.slope)

    def transform(self, keys: Any) -> ScaleIntensityRanged:
        """The MONAI dictionary transform that applies this map (clipping to the window when there is one).

        Raises:
            ValueError: When the map has no ``physical_range`` (MONAI's transform needs a window).
        """
        if self.physical_range is None:
            raise ValueError("transform() needs a physical_range; this map has physical_range=None.")
        (a_min, a_max), (b_min, b_max) = self.physical_range, tuple(self.to_model(v) for v in self.physical_range)
        return ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (for MetaTensor metadata and bundle metadata)."""
        d = asdict(self)
        d["physical_range"] = list(self.physical_range) if self.physical_range is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearIntensityMap:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: When the record lacks ``slope``.
        """
        if "slope" not in d:
            raise ValueError(f"an intensity map record needs 'slope', got keys {sorted(d)}.")
        pr = d.get("physical_range")
        return cls(float(d["slope"]), float(d.get("intercept", 0.0)), tuple(pr) if pr else None, d.get("units", "physical"))
