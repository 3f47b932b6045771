# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""95 % intervals for the numbers a report quotes: exact (Clopper & Pearson 1934) and Wilson (1927) binomial
intervals for rates, and a seeded, class-stratified percentile bootstrap (Efron & Tibshirani 1993) for statistics
that are not a count over a fixed denominator (balanced accuracy, ROC AUC).

The exact interval needs quantiles of the Beta distribution; :func:`beta_quantile` inverts the regularized
incomplete beta function :func:`betainc` (continued fraction, Numerical Recipes §6.4) by bisection, so no SciPy is
needed at run time (the tests check both against SciPy).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import torch

__all__ = [
    "beta_quantile",
    "betainc",
    "binomial_interval",
    "percentile_interval",
    "stratified_bootstrap_indices",
]


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got confidence={confidence!r}.")


def _betacf(x: float, a: float, b: float, max_iter: int = 20000, tol: float = 1e-15) -> float:
    """Lentz's continued fraction for the incomplete beta function (Numerical Recipes, eq. 6.4.5)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < tol:
            return h
    raise RuntimeError(f"betainc did not converge for a={a!r}, b={b!r}, x={x!r}.")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``: the CDF at ``x`` of a Beta(a, b) variable.

    Args:
        a: first shape parameter, > 0.
        b: second shape parameter, > 0.
        x: the point, in [0, 1].

    Returns:
        ``I_x(a, b)`` in [0, 1].

    Raises:
        ValueError: When ``a`` or ``b`` is not > 0 or ``x`` is outside [0, 1].

    Example::

        >>> round(betainc(1.0, 1.0, 0.3), 12)  # Beta(1, 1) is uniform
        0.3
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a > 0 and b > 0, got a={a!r}, b={b!r}.")
    if not 0 <= x <= 1:
        raise ValueError(f"betainc needs x in [0, 1], got x={x!r}.")
    if x in (0, 1):
        return float(x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(x, a, b) / a
    return 1.0 - math.exp(log_front) * _betacf(1 - x, b, a) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q``-quantile of a Beta(a, b) distribution (bisection on :func:`betainc`, to 1e-12).

    Args:
        q: probability in [0, 1].
        a: first shape parameter, > 0.
        b: second shape parameter, > 0.

    Returns:
        ``x`` with ``I_x(a, b) = q``.

    Raises:
        ValueError: When ``q`` is outside [0, 1] or ``a``/``b`` are not > 0.

    Example::

        >>> round(beta_quantile(0.5, 2.0, 2.0), 9)
        0.5
    """
    if not 0 <= q <= 1:
        raise ValueError(f"beta_quantile needs q in [0, 1], got q={q!r}.")
    betainc(a, b, 0.5)  # validates a and b
    if q in (0, 1):
        return float(q)
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def binomial_interval(successes: int, n: int, confidence: float = 0.95, method: str = "exact") -> tuple[float, float]:
    """Confidence interval for a rate ``successes / n`` (accuracy, sensitivity, false-positive rate, ...).

    ``"exact"``: Clopper & Pearson (1934), "The use of confidence or fiducial limits illustrated in the case of the
    binomial", Biometrika 26: the Beta quantiles ``B(α/2; k, n-k+1)`` and ``B(1-α/2; k+1, n-k)``; its coverage is at
    least ``confidence`` for every true rate (conservative). ``"wilson"``: Wilson (1927), JASA 22, the score
    interval; coverage close to ``confidence`` on average, narrower.

    Args:
        successes: the count ``k``, an integer in [0, n].
        n: the number of trials, an integer > 0.
        confidence: coverage in (0, 1); default 0.95.
        method: ``"exact"`` (Clopper-Pearson) or ``"wilson"``.

    Returns:
        ``(lower, upper)`` in [0, 1].

    Raises:
        ValueError: When ``n`` is not a positive integer, ``successes`` is not an integer in [0, n], or
            ``confidence``/``method`` are invalid.

    Example::

        >>> [round(v, 4) for v in binomial_interval(0, 20)]  # no false positive among 20 clean images
        [0.0, 0.1684]
    """
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
            raise ValueError(f"{name} must be an integer count, got {name}={v!r}.")
    k, n = int(successes), int(n)
    if n <= 0:
        raise ValueError(f"a rate needs n > 0 trials, got n={n}.")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in [0, n={n}], got successes={k}.")
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    if method == "exact":
        lo = 0.0 if k == 0 else beta_quantile(alpha / 2, k, n - k + 1)
        hi = 1.0 if k == n else beta_quantile(1 - alpha / 2, k + 1, n - k)
        return lo, hi
    if method == "wilson":
        z = NormalDist().inv_cdf(1 - alpha / 2)
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return max(0.0, centre - half), min(1.0, centre + half)
    raise ValueError(f"method must be 'exact' or 'wilson', got method={method!r}.")


def stratified_bootstrap_indices(labels: Any, num_samples: int = 1000, seed: int = 0) -> torch.Tensor:
    """Bootstrap resamples that keep every class's count: each class's samples are drawn with replacement from that
    class only, so a class present in the data is present (with the same count) in every resample, and balanced
    accuracy or a one-vs-rest AUC is defined on every resample where it is defined on the data.

    Args:
        labels: ``(N,)`` class indices, N > 0.
        num_samples: the number of resamples ``B``, an integer > 0.
        seed: seed of the ``torch.Generator`` used (same seed, same resamples).

    Returns:
        ``(B, N)`` long indices into the data, grouped by class.

    Raises:
        ValueError: When ``labels`` is empty or ``num_samples`` is not a positive integer.

    Example::

        >>> idx = stratified_bootstrap_indices(torch.tensor([0, 0, 1]), num_samples=4)
        >>> torch.as_tensor([0, 0, 1])[idx].sum(dim=1)  # one sample of class 1 in every resample
        tensor([1, 1, 1, 1])
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got num_samples={num_samples!r}.")
    y = torch.as_tensor(labels).detach().cpu().reshape(-1).long()
    if y.numel() == 0:
        raise ValueError("bootstrap needs at least one sample, got N=0.")
    g = torch.Generator().manual_seed(int(seed))
    parts = []
    for c in torch.unique(y).tolist():  # one draw per class present: a handful of classes
        members = torch.nonzero(y == c).reshape(-1)
        parts.append(members[torch.randint(0, members.numel(), (num_samples, members.numel()), generator=g)])
    return torch.cat(parts, dim=1)


def percentile_interval(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates: their ``(1-c)/2`` and ``(1+c)/2`` quantiles.

    Args:
        values: ``(B,)`` replicates of a statistic; ``nan`` replicates (statistic undefined on that resample) are
            ignored.
        confidence: coverage in (0, 1); default 0.95.

    Returns:
        ``(lower, upper)``; ``(nan, nan)`` when no replicate is finite.

    Raises:
        ValueError: When ``confidence`` is not in (0, 1).

    Example::

        >>> [round(v, 6) for v in percentile_interval(torch.arange(101.0), 0.9)]
        [5.0, 95.0]
    """
    _check_confidence(confidence)
    v = torch.as_tensor(values).detach().double().reshape(-1).cpu()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return math.nan, math.nan
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(v, q).tolist()
    return float(lo), float(hi)
