# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The budget of a ``monai-robust`` command in the image's stored units: the box (the stored value range) and the
ε list, given in stored units (``--eps 1 2 4`` grey levels of 255) or as ζ (``eps = ζ · mean ||x||_∞``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from monai_robust.attacks.base import ThreatModel

__all__ = ["STORED_RANGES", "first_images", "infer_stored_range", "stored_budget"]

STORED_RANGES = ((0.0, 255.0, "8-bit"), (0.0, 4095.0, "12-bit"), (0.0, 65535.0, "16-bit"), (-32768.0, 32767.0, "signed 16-bit"))
"""The stored ranges :func:`infer_stored_range` recognises in integer-valued data, narrowest first."""

logger = logging.getLogger(__name__)


def infer_stored_range(images: torch.Tensor) -> tuple[tuple[float, float], str]:
    """The stored range of images whose bundle declares none: the narrowest of :data:`STORED_RANGES` that holds
    integer-valued data, else the observed ``(min, max)``.

    Args:
        images: a batch in stored units.

    Returns:
        ``((low, high), how)`` with ``how`` saying how the range was found, for the report.

    Example::

        >>> infer_stored_range(torch.tensor([[0.0, 17.0, 255.0]]))
        ((0.0, 255.0), 'inferred from the data: integer values in 0..255 (8-bit)')
    """
    x = torch.as_tensor(images).as_subclass(torch.Tensor).float()
    lo, hi = float(x.min()), float(x.max())
    if bool((x == x.round()).all()):
        for r_lo, r_hi, name in STORED_RANGES:
            if lo >= r_lo and hi <= r_hi:
                return (r_lo, r_hi), f"inferred from the data: integer values in {r_lo:g}..{r_hi:g} ({name})"
    logger.warning("the bundle declares no stored range and the data are not integer-valued: using min..max %g..%g", lo, hi)
    return (lo, hi), f"inferred from the data: observed min..max {lo:g}..{hi:g} (declare stored_value_range)"


def stored_budget(
    eps: Sequence[float] | None, zeta: Sequence[float] | None, images: torch.Tensor, bounds: tuple[float, float]
) -> tuple[list[float], list[str]]:
    """The ε list in stored units, with how each was stated.

    Args:
        eps: budgets in stored units (L∞), or ``None``.
        zeta: relative budgets ``eps = ζ · mean ||x||_∞`` over ``images`` (Hirano et al. 2021), or ``None``.
        images: reference images in stored units (for ζ).
        bounds: the stored range (an ε larger than it is refused).

    Returns:
        ``(eps list, descriptions)``, sorted by ε.

    Raises:
        ValueError: When neither or both are given, or an ε is negative or wider than the range.
    """
    if (eps is None) == (zeta is None):
        raise ValueError(f"give the budget either in stored units (--eps) or as zeta (--zeta), got eps={eps!r}, zeta={zeta!r}.")
    if eps is not None:
        pairs = [(float(e), f"{float(e):g} stored units") for e in eps]
    else:
        pairs = [(t.eps, t.description) for t in (ThreatModel.from_zeta(z, images, lp="inf", bounds=bounds) for z in zeta or ())]
    for e, _ in pairs:
        if not 0 <= e <= bounds[1] - bounds[0]:
            raise ValueError(f"eps={e:g} stored units is outside 0..{bounds[1] - bounds[0]:g} (the stored range {bounds}).")
    pairs.sort()
    return [e for e, _ in pairs], [d for _, d in pairs]


def first_images(loader: Iterable[Any], count: int = 64) -> torch.Tensor:
    """Up to ``count`` images of ``loader``'s first batches (stored units), for ζ and range inference."""
    out, n = [], 0
    for batch in loader:
        x = batch["image"] if isinstance(batch, dict) else batch[0]
        out.append(torch.as_tensor(x).as_subclass(torch.Tensor).float())
        n += len(x)
        if n >= count:
            break
    if not out:
        raise ValueError("the data holds no image.")
    return torch.cat(out)[:count]
