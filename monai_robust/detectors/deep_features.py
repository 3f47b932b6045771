# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DFeat: a small classifier on pooled deep features, separating clean from adversarial images (Ma et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_robust.detectors.base import Detector, Pooling, check_positive
from monai_robust.detectors.logistic import LogisticRegression

__all__ = ["DeepFeatureDetector"]


class DeepFeatureDetector(Detector):
    """Deep-feature ("DFeat") detector: a small classifier on the pooled features of chosen layers.

    Ma, Niu, Gu, Wang, Zhao, Bailey & Lu, "Understanding Adversarial Attacks on Deep Learning Based Medical Image
    Analysis Systems", Pattern Recognition 110, 2021, https://arxiv.org/abs/1907.10456

    Ma et al. found that medical adversarial examples are easy to detect because their deep features lie far from
    those of clean images; DFeat feeds the second-last layer's features to a classifier (a random forest in the
    paper). Here the classifier is a torch one-hidden-layer perceptron (or, with ``hidden_units=0``, a logistic
    regression; :class:`~monai_robust.detectors.logistic.LogisticRegression`) on the standardised, concatenated
    features of ``layers`` (channel means by default), so the fitted detector is one ``state_dict`` and runs without
    NumPy or scikit-learn.

    Args:
        network: classifier ``(N, C, *spatial) -> (N, classes)``, 2D or 3D.
        layers: names of the layers to read (the paper: the second-last layer, e.g. ``("class_layers.flatten",)``
            for MONAI's ``DenseNet121``).
        hidden_units: width of the hidden ReLU layer (default 32; non-linear like the paper's random forest, and far
            better than a linear model on PneumoniaMNIST: AUC 0.98 vs 0.84 against PGD at 4/255), or 0 for logistic
            regression.
        pooling: ``"avg"`` (channel means; default) or ``"flatten"``.
        l2: L2 penalty of the classifier's weights.
        max_iter: L-BFGS iterations of the classifier.

    Raises:
        ValueError: When an argument is out of range or a layer does not exist.

    Example::

        >>> det = DeepFeatureDetector(net, layers=("pool",)).fit(clean, adversarial)
        >>> scores = det(images)  # (N,)
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str],
        *,
        hidden_units: int = 32,
        pooling: str = Pooling.AVG,
        l2: float = 1e-2,
        max_iter: int = 200,
    ) -> None:
        super().__init__(network, layers, pooling=pooling)
        hidden_units = check_positive("hidden_units", hidden_units, allow_zero=True, integer=True)
        self.classifier = LogisticRegression(l2=l2, max_iter=max_iter, hidden_units=hidden_units)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, sum_l F_l)`` concatenated pooled features of ``x``."""
        _, feats = self.extract(x)
        return torch.cat([f.float() for f in feats], dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _fit(self, clean: list[torch.Tensor], adversarial: list[torch.Tensor]) -> None:
        _, feats_c = self.extract_all(clean)
        _, feats_a = self.extract_all(adversarial)
        x = torch.cat([torch.cat(feats_c, dim=1), torch.cat(feats_a, dim=1)])
        y = torch.cat([torch.zeros(feats_c[0].shape[0]), torch.ones(feats_a[0].shape[0])]).to(x.device)
        self.classifier.fit(x, y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_units={self.classifier.hidden_units}"
