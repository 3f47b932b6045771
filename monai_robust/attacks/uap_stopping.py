# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""When a UAP fit may stop: a running estimate of its rate from the minibatches it predicts anyway, which decides
when the exact (fp32, all fitting images) rate is worth computing.

A UAP fit stops once the rate on the fitting images reaches ``target_rate``. Measuring that rate exactly is a
forward pass over every fitting image; doing it after every minibatch would cost more than the fit. But every
minibatch step already predicts its images at the current δ (the step's own forward), so the share of successes
over the last ``window`` images is a free estimate of the rate; it lags a little (δ improves along the window)
and is noisy (a few hundred images). :class:`RunningRate` keeps it and says when an exact check is due: when the
estimate reaches ``target_rate - margin`` and enough new images have passed since the last check: ``window`` at
first, twice as many after every check that did not stop the fit (a rate that hovers just below ``target_rate``
costs a few checks per fit, not one per window). The fit itself computes the exact rate, in fp32, and stops only
on that.
"""

from __future__ import annotations

from collections import deque

from monai_robust.attacks.threat import _check_positive, _check_positive_int

__all__ = ["RunningRate"]


class RunningRate:
    """Running success rate over the last ``window`` images of a fit, and when to check the exact rate.

    Args:
        target_rate: the fit's stopping rate, in (0, 1].
        window: images the estimate covers (>= 1), and the fewest images between two checks.
        margin: a check is due once the estimate reaches ``target_rate - margin`` (>= 0; the estimate lags behind
            the rate of the current δ).

    Raises:
        ValueError: When an argument is out of range (quoted).

    Example::

        >>> running = RunningRate(0.8, window=4)
        >>> running.update(3, 4)  # 0.75 over the window: not yet
        False
        >>> running.update(4, 4)  # 1.0 over the last 4 images: check the exact rate now
        True
        >>> running.checked()  # the check did not stop the fit: the next one waits for 8 new images
    """

    def __init__(self, target_rate: float, window: int, margin: float = 0.0) -> None:
        self.target_rate = _check_positive("target_rate", target_rate)
        self.window = _check_positive_int("window", window)
        self.margin = _check_positive("margin", margin, allow_zero=True)
        self.reset()

    def reset(self) -> None:
        """Forgets every minibatch (a new fit, or a new δ from a checkpoint)."""
        self._batches: deque[tuple[int, int]] = deque()
        self._hits = self._count = 0
        self._since_check = 0
        self._gap = self.window

    @property
    def estimate(self) -> float | None:
        """The success share over the images held (up to about ``window``), or None before ``window`` images."""
        return self._hits / self._count if self._count >= self.window else None

    def checked(self) -> None:
        """Notes an exact check that did not stop the fit (one :meth:`update` asked for, or one after a pass): the
        next one waits for twice as many new images as the last."""
        self._since_check = 0
        self._gap *= 2

    def update(self, hits: int, n: int) -> bool:
        """Adds a minibatch of ``n`` images, ``hits`` of them successes at the δ it was predicted with.

        Returns:
            True when an exact check of the rate is due (the estimate over ``window`` images reaches
            ``target_rate - margin`` and enough images have passed since the last check); then call
            :meth:`checked` if the check does not stop the fit.
        """
        self._batches.append((hits, n))
        self._hits += hits
        self._count += n
        self._since_check += n
        while len(self._batches) > 1 and self._count - self._batches[0][1] >= self.window:
            h, m = self._batches.popleft()
            self._hits -= h
            self._count -= m
        est = self.estimate
        return est is not None and self._since_check >= self._gap and est >= self.target_rate - self.margin
