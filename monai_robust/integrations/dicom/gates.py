# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Sanity gates before any verdict: an image whose values make the model's answer meaningless gets no class.

The input contract of a bundle (modality, channels, bit depth) says which images a model is *for*; these gates catch
corrupt *values* in images that pass it: non-finite pixels, a constant image (e.g. RescaleSlope 0), a rescale that
puts (nearly) every pixel outside the model's intensity window (e.g. RescaleIntercept 1e38), or a value range so
wide that the window is a sliver of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_RANGE_PER_WINDOW", "MIN_INSIDE_WINDOW", "channel_mismatch", "sanity_problem"]

MIN_INSIDE_WINDOW = 0.01  # fraction of pixel values that must lie inside the intensity window
MAX_RANGE_PER_WINDOW = 1e4  # the value range may span at most this many window widths


def sanity_problem(
    image: np.ndarray,
    window: Sequence[float] | None,
    units: str | None = None,
    min_inside: float = MIN_INSIDE_WINDOW,
    max_range_ratio: float = MAX_RANGE_PER_WINDOW,
) -> str | None:
    """Why ``image`` must not be given a class, or ``None`` when it may.

    Args:
        image: raw values (stored units after the modality rescale), any shape.
        window: the model's intensity window ``(low, high)`` in the same units, or ``None`` (no window check).
        units: the window's units, for the message.
        min_inside: the smallest fraction of pixel values inside the window (default 1 %).
        max_range_ratio: the largest value range, in window widths (default 10,000).

    Returns:
        A sentence naming the problem and the numbers, or ``None``.

    Example::

        >>> sanity_problem(np.zeros((1, 8, 8)), (0, 4095))
        'constant image (every pixel value is 0): nothing to classify'
    """
    values = np.asarray(image)
    if values.size == 0:
        return "empty image (no pixel)"
    finite = np.isfinite(values)
    if not finite.all():
        return f"{int((~finite).sum())} of {values.size} pixel values are not finite (NaN or infinite)"
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return f"constant image (every pixel value is {lo:g}): nothing to classify"
    if window is None:
        return None
    w_lo, w_hi = float(window[0]), float(window[1])
    unit = f" {units}" if units else ""
    inside = float(np.mean((values >= w_lo) & (values <= w_hi)))
    if inside < min_inside:
        return (
            f"off-window: {inside:.1%} of the pixel values lie inside the model's intensity window "
            f"[{w_lo:g}, {w_hi:g}]{unit} (values {lo:g} to {hi:g}); the model's answer would mean nothing"
        )
    if (hi - lo) > max_range_ratio * max(w_hi - w_lo, np.finfo(np.float32).tiny):
        return (
            f"value range {lo:g} to {hi:g}{unit} spans more than {max_range_ratio:g} window widths of "
            f"[{w_lo:g}, {w_hi:g}]: the rescale parameters make the window meaningless"
        )
    return None


def channel_mismatch(image: np.ndarray, in_channels: int | None) -> str | None:
    """Why an image is not for this model by its channels (e.g. colour ultrasound into a grey model), or ``None``.

    Args:
        image: channel first ``(C, *spatial)``.
        in_channels: the model's input channels (``None``: not known, no check).

    Returns:
        A sentence, or ``None``.

    Example::

        >>> channel_mismatch(np.zeros((3, 8, 8)), 1)
        'not for this model: a 3-channel (colour) image, the model takes 1 channel(s)'
    """
    c = int(np.shape(image)[0])
    if in_channels is None or c == int(in_channels):
        return None
    kind = "colour" if c == 3 else "multi-channel" if c > 1 else "grey"
    return f"not for this model: a {c}-channel ({kind}) image, the model takes {int(in_channels)} channel(s)"
