# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A detector threshold whose false-positive rate holds: split-conformal calibration on clean images
(Vovk et al. 2005, "Algorithmic Learning in a Random World"; Angelopoulos & Bates 2023, "Conformal prediction: a
gentle introduction", §1 and §3.2), and the measured false-positive rate with an exact interval.

**The rule.** With ``n`` clean calibration scores (images not used to fit the detector) and a target rate ``α``,
the threshold is the ``k``-th smallest score, ``k = ceil((n + 1)(1 - α))``, and an image is flagged when its score
is strictly above it. For a new clean image exchangeable with the calibration images, ``P(flagged) <= 1 - k / (n +
1) <= α`` (the rank of the new score among ``n + 1`` is uniform), for any detector and any ``n``, ties included.

**The refusal.** The rank exists only when ``k <= n``, i.e. ``n >= 1 / α - 1``: at ``α = 0.05`` at least **19**
clean images, at ``α = 0.01`` at least 99 (:func:`min_calibration_size`). Below that no threshold among the scores
has the guarantee, and calibrating raises an error that says how many images are needed.

**What the guarantee does not say.** It is an average over calibration sets. The rate of one calibrated guard on
new images is random: for continuous scores it is ``Beta(n + 1 - k, k)`` distributed (Vovk 2012, "Conditional
validity of inductive conformal predictors"), mean ``(n + 1 - k) / (n + 1) <= α``, spread ``~ sqrt(α / n)``. With
19 images at ``α = 0.05`` one guard in twenty flags more than 14.6 % of clean images; :func:`fpr_range` gives that
spread and :func:`calibration_size_for` the number of images that keeps it under a chosen ceiling.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_robust.metrics.intervals import beta_quantile, betainc, binomial_interval

__all__ = [
    "calibration_size_for",
    "conformal_rank",
    "conformal_threshold",
    "false_positive_rate",
    "fpr_range",
    "min_calibration_size",
]


def _check_fpr(fpr: Any) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise ValueError(f"fpr must be a number in (0, 1), got fpr={fpr!r}.")
    return float(fpr)


def min_calibration_size(fpr: float) -> int:
    """The fewest clean calibration images for which the conformal threshold exists at ``fpr``: ``ceil(1/fpr - 1)``.

    Args:
        fpr: the target false-positive rate ``α`` in (0, 1).

    Returns:
        The minimum ``n`` (19 at 0.05, 9 at 0.1, 99 at 0.01).

    Raises:
        ValueError: When ``fpr`` is not in (0, 1).

    Example::

        >>> min_calibration_size(0.05)
        19
    """
    a = _check_fpr(fpr)
    return max(1, math.ceil(1.0 / a - 1.0 - 1e-9))


def conformal_rank(n: int, fpr: float) -> int:
    """The rank ``k = ceil((n + 1)(1 - fpr))`` (1-based, ascending) of the threshold among ``n`` calibration scores.

    Args:
        n: the number of clean calibration scores.
        fpr: the target false-positive rate in (0, 1).

    Returns:
        ``k`` in ``[1, n]``.

    Raises:
        ValueError: When ``fpr`` is not in (0, 1), or ``n < min_calibration_size(fpr)`` (the message says how many
            images are needed).

    Example::

        >>> conformal_rank(200, 0.05)
        191
    """
    a = _check_fpr(fpr)
    need = min_calibration_size(a)
    if isinstance(n, bool) or not isinstance(n, int) or n < need:
        raise ValueError(
            f"calibrating at fpr={a} needs at least {need} clean images (the conformal threshold is the "
            f"ceil((n + 1)(1 - fpr))-th smallest score, which exists only for n >= 1/fpr - 1), got n={n!r}."
        )
    return min(n, max(1, math.ceil((n + 1) * (1.0 - a) - 1e-9)))


def conformal_threshold(scores: Any, fpr: float) -> tuple[float, int]:
    """The conformal threshold of clean calibration scores: flag a score strictly above it.

    Args:
        scores: ``(n,)`` detector scores of clean images not used to fit the detector (higher = more suspect).
        fpr: the target false-positive rate in (0, 1).

    Returns:
        ``(threshold, k)``: the ``k``-th smallest score and its rank.

    Raises:
        ValueError: When a score is not finite, or there are too few scores (see :func:`conformal_rank`).

    Example::

        >>> conformal_threshold(torch.arange(20.0), 0.05)  # k = ceil(21 * 0.95) = 20: the largest score
        (19.0, 20)
    """
    s = torch.as_tensor(scores).detach().double().reshape(-1).cpu()
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"calibration scores must be finite, got {int((~torch.isfinite(s)).sum())} non-finite.")
    k = conformal_rank(int(s.numel()), fpr)
    return float(s.sort().values[k - 1]), k


def fpr_range(n: int, k: int, confidence: float = 0.95) -> tuple[float, float]:
    """Where the false-positive rate of one calibrated threshold falls: the central ``confidence`` range of
    ``Beta(n + 1 - k, k)``, the law of ``P(score > k-th smallest of n)`` for continuous scores (module docs).

    Args:
        n: the calibration size.
        k: the threshold's rank, in [1, n].
        confidence: the range's probability, in (0, 1); default 0.95.

    Returns:
        ``(lower, upper)``.

    Raises:
        ValueError: When ``k`` is not in [1, n] or ``confidence`` not in (0, 1).

    Example::

        >>> [round(v, 3) for v in fpr_range(19, 19)]  # 19 images at fpr 0.05
        [0.001, 0.176]
    """
    if not 1 <= k <= n:
        raise ValueError(f"the rank k must be in [1, n={n}], got k={k!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got confidence={confidence!r}.")
    tail = (1 - confidence) / 2
    return beta_quantile(tail, n + 1 - k, k), beta_quantile(1 - tail, n + 1 - k, k)


def calibration_size_for(fpr: float, max_fpr: float, probability: float = 0.95, limit: int = 10**6) -> int:
    """The fewest clean calibration images for which a calibrated guard's false-positive rate stays at most
    ``max_fpr`` with the given probability (over calibration sets; continuous scores).

    Args:
        fpr: the target rate ``α`` in (0, 1).
        max_fpr: the ceiling, in (``fpr``, 1).
        probability: how often the ceiling must hold, in (0, 1); default 0.95.
        limit: give up above this many images.

    Returns:
        The smallest ``n`` from which the ceiling holds for every larger calibration size (the condition is not
        monotone in ``n``: it fails again just after the rank ``k`` steps up).

    Raises:
        ValueError: On invalid arguments, or when more than ``limit`` images would be needed.

    Example::

        >>> calibration_size_for(0.05, 0.10)  # at most 10 % with probability 0.95
        61
    """
    a = _check_fpr(fpr)
    if not a < max_fpr < 1:
        raise ValueError(f"max_fpr must be in (fpr={a}, 1), got max_fpr={max_fpr!r}.")
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got probability={probability!r}.")

    def holds(n: int) -> bool:
        k = conformal_rank(n, a)
        return betainc(n + 1 - k, k, max_fpr) >= probability

    # holds(n) is not monotone in n (k = ceil((n + 1)(1 - α)) jumps once every ~1/α images): scan upwards and return
    # the size from which it holds for every larger n, i.e. after a run of holds longer than two jump periods
    period = 2 * math.ceil(1 / a) + 1
    first, run = None, 0
    for n in range(min_calibration_size(a), limit + 1):
        if holds(n):
            first, run = (n if first is None else first), run + 1
            if run >= period:
                return first
        else:
            first, run = None, 0
    raise ValueError(f"more than limit={limit} calibration images would be needed for max_fpr={max_fpr}.")


def false_positive_rate(flagged: Any, confidence: float = 0.95) -> dict[str, Any]:
    """The measured false-positive rate on held-out clean images, with its exact (Clopper-Pearson) interval.

    Args:
        flagged: ``(n,)`` bool, True where a clean image was flagged.
        confidence: the interval's coverage, in (0, 1); default 0.95.

    Returns:
        ``{"fpr": float, "n": int, "false_positives": int, "interval": [lo, hi], "method": str}``.

    Raises:
        ValueError: When ``flagged`` is empty.

    Example::

        >>> false_positive_rate(torch.tensor([False] * 95 + [True] * 5))["interval"]  # [0.016, 0.113]
    """
    f = torch.as_tensor(flagged).detach().reshape(-1).bool().cpu()
    n, k = int(f.numel()), int(f.sum())
    if n == 0:
        raise ValueError("the false-positive rate needs at least one held-out clean image, got none.")
    return {
        "fpr": k / n,
        "n": n,
        "false_positives": k,
        "interval": list(binomial_interval(k, n, confidence)),
        "method": f"exact Clopper-Pearson {confidence:.0%} interval",
    }
