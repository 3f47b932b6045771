# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""String options of the package, as ``StrEnum`` read through :func:`as_lp` and MONAI's ``look_up_option``."""

from __future__ import annotations

import math

from monai.utils.enums import StrEnum

__all__ = ["LpNorm", "as_lp"]


class LpNorm(StrEnum):
    """The Lp order of a threat model: ``"inf"`` (L-infinity), ``"2"`` (L2) or ``"1"`` (L1)."""

    LINF = "inf"
    L2 = "2"
    L1 = "1"


_ALIASES = {
    "inf": LpNorm.LINF, "linf": LpNorm.LINF, "l_inf": LpNorm.LINF, "infinity": LpNorm.LINF,
    "2": LpNorm.L2, "l2": LpNorm.L2, "2.0": LpNorm.L2,
    "1": LpNorm.L1, "l1": LpNorm.L1, "1.0": LpNorm.L1,
}


def as_lp(lp: str | float | int | LpNorm) -> LpNorm:
    """Reads an Lp order given as ``"inf"``, ``float("inf")``, ``2``, ``"l2"``, ``1`` ... into :class:`LpNorm`.

    Args:
        lp: the order, as a string, a number or an :class:`LpNorm`.

    Returns:
        The matching :class:`LpNorm`.

    Raises:
        ValueError: When ``lp`` is not one of inf, 2 or 1.

    Example::

        >>> as_lp(float("inf"))
        <LpNorm.LINF: 'inf'>
    """
    if isinstance(lp, LpNorm):
        return lp
    if isinstance(lp, (int, float)) and not isinstance(lp, bool):
        key = "inf" if math.isinf(lp) and lp > 0 else str(float(lp))
    elif isinstance(lp, str):
        key = lp.strip().lower()
    else:
        raise ValueError(f"lp must be 'inf', 2 or 1, got {lp!r}.")
    if key not in _ALIASES:
        raise ValueError(f"lp must be 'inf', 2 or 1, got {lp!r}.")
    return _ALIASES[key]
