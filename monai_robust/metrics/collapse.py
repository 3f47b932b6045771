# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Collapse to one class: the prediction histogram and a flag for a model that predicts (almost) one class.

Adversarial training on a small or imbalanced medical set can end in a model that predicts the majority class for
nearly every input; its accuracy is then about the majority fraction and its robust accuracy looks excellent (no
attack can flip a prediction that ignores the input). The flag makes that visible next to the accuracy.

**Definitions** (``t`` = ``threshold``, default 0.9). With ``q_k`` the fraction of the *labels* in class ``k`` and
``p_k`` the fraction of the *predictions*:

* the test set is **balanced enough** when at least two classes are present and the majority class is below ``t``
  (``max_k q_k < t``). There, predicting one class ``k`` for a fraction ``>= t`` of the images means at least
  ``t - q_k > 0`` of them are predicted as ``k`` wrongly, whatever the model: not what a working classifier does;
* the model is **collapsed** when the test set is balanced enough and ``max_k p_k >= t``.

On a test set that is not balanced enough the flag is ``False`` and ``note`` says the set cannot show a collapse (a
constant predictor there is as accurate as the majority fraction; read the balanced accuracy, which is ``1 / classes
present`` for any constant predictor). ``unpredicted_classes`` lists the classes present in the labels that the
model never predicts, on any test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_robust.metrics.robustness import to_class_predictions

__all__ = ["collapse_check", "prediction_histogram"]


def _num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got num_classes={num_classes!r}.")
    return num_classes


def prediction_histogram(pred: Any, num_classes: int) -> list[int]:
    """How many inputs are predicted as each class.

    Args:
        pred: logits ``(N, C)`` (argmax; one logit thresholded at 0) or predicted class indices ``(N,)``.
        num_classes: the number of classes ``C`` (2 for a single-logit head), >= 2.

    Returns:
        ``C`` counts summing to ``N``.

    Raises:
        ValueError: When ``num_classes`` is not an integer >= 2 or a prediction is out of range.

    Example::

        >>> prediction_histogram(torch.tensor([[0.2], [-1.0], [3.0]]), 2)
        [1, 2]
    """
    c = _num_classes(num_classes)
    p = to_class_predictions(pred)
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= c):
        raise ValueError(f"predicted class {int(p.max())} is out of range for num_classes={c}.")
    return torch.bincount(p.cpu(), minlength=c).tolist()


def collapse_check(
    pred: Any, labels: Any, num_classes: int, threshold: float = 0.9, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Whether the model predicts one class for at least ``threshold`` of a balanced-enough test set (module docs).

    Args:
        pred: logits ``(N, C)`` or predicted class indices ``(N,)``.
        labels: ``(N,)`` true class indices.
        num_classes: the number of classes ``C``, >= 2.
        threshold: the fraction ``t`` in (0.5, 1]; default 0.9.
        class_names: a name per class for ``note``; default the indices.

    Returns:
        ``{"collapsed": bool, "balanced_enough": bool, "dominant_class": int, "dominant_fraction": float,
        "majority_fraction": float, "unpredicted_classes": [int, ...], "threshold": t, "note": str}``.

    Raises:
        ValueError: When sizes differ, N is 0, ``threshold`` is not in (0.5, 1] or classes are out of range.

    Example::

        >>> labels = torch.tensor([0] * 60 + [1] * 40)
        >>> collapse_check(torch.zeros(100, dtype=torch.long), labels, 2)["collapsed"]
        True
    """
    c = _num_classes(num_classes)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 < threshold <= 1:
        raise ValueError(f"threshold must be a fraction in (0.5, 1], got threshold={threshold!r}.")
    names = [str(k) for k in range(c)] if class_names is None else [str(s) for s in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names for {c} classes: {list(names)!r}.")
    hist = prediction_histogram(pred, c)
    y = torch.as_tensor(labels).detach().cpu().reshape(-1).long()
    n = sum(hist)
    if y.numel() != n or n == 0:
        raise ValueError(f"pred and labels must hold the same number N > 0 of samples, got {n} and {y.numel()}.")
    if int(y.min()) < 0 or int(y.max()) >= c:
        raise ValueError(f"label {int(y.max())} is out of range for num_classes={c}.")
    true_hist = torch.bincount(y, minlength=c).tolist()
    dominant = max(range(c), key=lambda k: hist[k])
    dominant_fraction = hist[dominant] / n
    majority_fraction = max(true_hist) / n
    present = sum(v > 0 for v in true_hist)
    balanced_enough = present >= 2 and majority_fraction < threshold
    collapsed = balanced_enough and dominant_fraction >= threshold
    unpredicted = [k for k in range(c) if true_hist[k] > 0 and hist[k] == 0]
    if collapsed:
        note = (f"collapsed: class {names[dominant]} predicted for {dominant_fraction:.1%} of {n} images "
                f"(the labels' largest class is {majority_fraction:.1%})")
    elif not balanced_enough:
        note = (f"this test set cannot show a collapse: its largest class is {majority_fraction:.1%} of {n} "
                f"images (a balanced-enough set needs >= 2 classes and < {threshold:.0%}); read balanced accuracy")
    else:
        note = ""
    if unpredicted:
        note = "; ".join(filter(None, [note, "never predicted: class " + ", ".join(names[k] for k in unpredicted)]))
    return {
        "collapsed": bool(collapsed),
        "balanced_enough": bool(balanced_enough),
        "dominant_class": int(dominant),
        "dominant_fraction": float(dominant_fraction),
        "majority_fraction": float(majority_fraction),
        "unpredicted_classes": unpredicted,
        "threshold": float(threshold),
        "note": note,
    }
