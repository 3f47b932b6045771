# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A compact training loop for in-memory tensors: the small classifiers of the tutorials and benchmarks, trained in
seconds with the checkpoint of the best validation epoch kept. Real pipelines use MONAI's ``SupervisedTrainer``
(with :mod:`monai_robust.engines.training` for adversarial training)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

__all__ = ["classification_accuracy", "fit_classifier"]


def classification_accuracy(
    network: nn.Module, images: torch.Tensor, labels: torch.Tensor, balanced: bool = False, batch_size: int = 256
) -> float:
    """Accuracy of ``network`` (put in eval mode) on ``images``, or balanced accuracy (the mean of the per-class
    recalls over the classes present in ``labels``).

    Args:
        network: a classifier returning logits ``(N, classes)``.
        images: ``(N, C, *spatial)`` on the network's device.
        labels: ``(N,)`` class indices.
        balanced: the mean per-class recall instead of the fraction correct.
        batch_size: images per forward pass.

    Returns:
        A number in ``[0, 1]``.

    Raises:
        ValueError: When ``images`` is empty or ``labels`` does not hold one index per image.

    Example::

        >>> classification_accuracy(net, test_x, test_y, balanced=True)
        0.87
    """
    if images.shape[0] == 0 or labels.shape != (images.shape[0],):
        raise ValueError(f"need N > 0 images and (N,) labels, got images {tuple(images.shape)}, labels {tuple(labels.shape)}.")
    network.eval()
    with torch.no_grad():
        pred = torch.cat([network(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    if not balanced:
        return float((pred == labels).float().mean())
    return float(torch.stack([(pred[labels == c] == c).float().mean() for c in torch.unique(labels)]).mean())


def fit_classifier(
    network: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    balanced: bool = False,
) -> dict[str, Any]:
    """Trains ``network`` in place with AdamW and a one-cycle learning-rate schedule (Smith & Topin, "Super-
    convergence", 2019, https://arxiv.org/abs/1708.07120) on cross-entropy, and keeps the weights of the epoch with
    the best validation accuracy (never looks at a test split). With ``balanced`` (imbalanced data, where the
    majority class alone scores high) the loss is weighted by inverse class frequency and the epoch is chosen by
    balanced validation accuracy.

    Shuffling draws from torch's global random generator: seed it (``torch.manual_seed``) before building the
    network for a reproducible run.

    Args:
        network: a classifier returning logits ``(N, classes)``.
        train: ``(images (N, C, *spatial), labels (N,))``.
        val: the validation split, same layout.
        epochs: passes over ``train`` (>= 1).
        lr: the one-cycle schedule's peak learning rate.
        batch_size: images per step.
        balanced: class-weighted loss and balanced-accuracy model selection.

    Returns:
        ``{"epochs", "balanced", "val_selection_metric", "val_per_epoch", "val_best", "train_time_s"}``; the network
        holds the best epoch's weights, in eval mode.

    Raises:
        ValueError: When ``epochs`` or ``batch_size`` is not a positive integer, ``lr`` is not positive, or a
            split is empty or its labels do not match its images.

    Example::

        >>> torch.manual_seed(0)
        >>> net = SmallCNN(channels=(32, 64, 64), norm=None, dropout=0.2)
        >>> info = fit_classifier(net, (train_x, train_y), (val_x, val_y), epochs=6)
        >>> info["val_best"]
        0.95
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got lr={lr!r}.")
    for name, (x, y) in (("train", train), ("val", val)):
        if x.shape[0] == 0 or y.shape != (x.shape[0],):
            raise ValueError(f"{name} must be (images (N, ...), labels (N,)) with N > 0, got {tuple(x.shape)}, {tuple(y.shape)}.")
    x, y = train
    counts = torch.bincount(y).float()
    weight = (counts.sum() / (len(counts) * counts)) if balanced else None
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(network.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    best, best_state, hist, t0 = -1.0, None, [], time.perf_counter()
    for _ in range(epochs):
        network.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(network(x[idx]), y[idx], weight=weight).backward()
            opt.step()
            sched.step()
        score = classification_accuracy(network, *val, balanced=balanced)
        hist.append(score)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in network.state_dict().items()}
    network.load_state_dict(best_state)
    network.eval()
    return {"epochs": epochs, "balanced": balanced, "val_selection_metric": "balanced_accuracy" if balanced else "accuracy",
            "val_per_epoch": hist, "val_best": best, "train_time_s": time.perf_counter() - t0}
