# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Mahalanobis: class-conditional Gaussians with a tied covariance on pooled features of several layers, optional
input pre-processing, and a logistic-regression ensemble of the per-layer confidence scores (Lee et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_robust.detectors.base import Detector, Pooling, check_positive, predicted_classes
from monai_robust.detectors.logistic import LogisticRegression

__all__ = ["MahalanobisDetector", "mahalanobis_distance"]


def mahalanobis_distance(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances ``(f - mu_c)^T P (f - mu_c)`` of each sample to each class mean.

    Args:
        features: ``(N, F)``.
        means: ``(K, F)`` class means.
        precision: ``(F, F)`` shared (tied) precision matrix.

    Returns:
        ``(N, K)`` distances.

    Example::

        >>> mahalanobis_distance(torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.eye(2))
        tensor([[1., 4.]])
    """
    diff = features[:, None, :] - means[None, :, :]  # (N, K, F)
    return torch.einsum("nkf,fg,nkg->nk", diff, precision, diff)


class MahalanobisDetector(Detector):
    """Mahalanobis-distance detector with a layer ensemble.

    Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
    Attacks", NeurIPS 2018, https://arxiv.org/abs/1807.03888

    For each layer ``l``, the channel means ``f_l(x)`` of the clean fitting images give class means ``mu_{l,c}``
    (classes predicted by the network, so ``fit`` needs no labels) and one tied covariance ``Sigma_l`` (its
    pseudo-inverse, with a small ridge, is stored). The layer's confidence is ``M_l(x) = max_c -(f_l(x) -
    mu_{l,c})^T Sigma_l^-1 (f_l(x) - mu_{l,c})`` over the classes seen while fitting.

    With ``noise > 0`` the input is first pre-processed as in the paper: ``x' = x - noise * sign(grad_x d_l(x))``,
    where ``d_l`` is the distance to the closest class mean at layer ``l`` (one gradient per layer), which moves clean
    images closer to their class more than adversarial ones; ``M_l(x')`` is then used. This needs gradients: do not
    call the detector inside ``torch.inference_mode()``. The step is not clipped to the input range. In an attack,
    ``sign`` passes no gradient, so gradients flow through ``x'`` as through ``x``.

    A logistic regression on ``(M_1, ..., M_L)`` (the paper's layer ensemble) separates clean (0) from adversarial
    (1) fitting images; its logit is the score.

    Args:
        network: classifier ``(N, C, *spatial) -> (N, classes)``, 2D or 3D.
        layers: names of the layers to read (e.g. the output of each dense block).
        noise: input pre-processing magnitude in model-input units (>= 0; 0 disables it, the default).
        pooling: ``"avg"`` (channel means, as in the paper; default) or ``"flatten"``.
        ridge: relative ridge added to the covariance before inversion, ``ridge * mean(diag(Sigma))``.
        l2: L2 penalty of the logistic regression (1e-2, about scikit-learn's ``C = 1`` for 100 samples).

    Raises:
        ValueError: When ``noise < 0``, ``ridge < 0`` or a layer does not exist.
        RuntimeError: When used with ``noise > 0`` inside ``torch.inference_mode()``.

    Example::

        >>> det = MahalanobisDetector(net, layers=("features.1", "features.4", "features.8"), noise=0.001)
        >>> scores = det.fit(clean, adversarial)(images)  # (N,)
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str],
        *,
        noise: float = 0.0,
        pooling: str = Pooling.AVG,
        ridge: float = 1e-6,
        l2: float = 1e-2,
    ) -> None:
        super().__init__(network, layers, pooling=pooling)
        self.noise = check_positive("noise", noise, allow_zero=True)
        self.ridge = check_positive("ridge", ridge, allow_zero=True)
        self.register_buffer("class_mask", torch.empty(0, dtype=torch.bool))
        for i in range(len(self.layers)):
            self.register_buffer(f"means_{i}", torch.empty(0))
            self.register_buffer(f"precision_{i}", torch.empty(0))
        self.classifier = LogisticRegression(l2=l2)

    def gaussians(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fitted ``(means (K, F_l), precision (F_l, F_l))`` of each layer."""
        return [(getattr(self, f"means_{i}"), getattr(self, f"precision_{i}")) for i in range(len(self.layers))]

    def _distance(self, feats: torch.Tensor, layer: int) -> torch.Tensor:
        means, precision = self.gaussians()[layer]
        d = mahalanobis_distance(feats.float(), means, precision)  # (N, K)
        return d.masked_fill(~self.class_mask[None, :], float("inf")).amin(dim=1)  # closest seen class, (N,)

    def confidence(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, layers)`` Mahalanobis confidence scores ``M_l`` (after pre-processing when ``noise > 0``)."""
        if not self.noise:
            _, feats = self.extract(x)
            return torch.stack([-self._distance(f, i) for i, f in enumerate(feats)], dim=1)
        if torch.is_inference_mode_enabled():
            raise RuntimeError("Mahalanobis input pre-processing (noise > 0) needs gradients: not in inference_mode().")
        num_layers, n = len(self.layers), x.shape[0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            _, feats = self.extract(xg)
            grads = [
                torch.autograd.grad(self._distance(f, i).sum(), xg, retain_graph=i < num_layers - 1)[0]
                for i, f in enumerate(feats)
            ]
        moved = torch.cat([x - self.noise * g.sign() for g in grads])  # (L * N, C, *spatial), one copy per layer
        _, feats = self.extract(moved)
        return torch.stack([-self._distance(f[i * n : (i + 1) * n], i) for i, f in enumerate(feats)], dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.confidence(x))

    def _fit(self, clean: list[torch.Tensor], adversarial: list[torch.Tensor]) -> None:
        logits, feats = self.extract_all(clean)
        classes = predicted_classes(logits)
        num_classes = max(2, logits.shape[1])
        counts = torch.bincount(classes, minlength=num_classes)
        self.class_mask = counts > 0
        onehot = torch.nn.functional.one_hot(classes, num_classes).float()  # (N, K)
        for i, f in enumerate(feats):
            means = (onehot.T @ f) / counts.clamp_min(1)[:, None].float()  # (K, F); rows of unseen classes are 0
            centred = f - means[classes]
            cov = centred.T @ centred / f.shape[0]  # tied covariance (F, F)
            cov = cov + self.ridge * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(cov.shape[0], device=cov.device)
            setattr(self, f"means_{i}", means)
            setattr(self, f"precision_{i}", torch.linalg.pinv(cov.double(), hermitian=True).float())
        self.fitted.fill_(True)  # confidence() checks feature sizes against the fitted ones from here on
        scores = []
        for batch in clean + adversarial:
            with torch.no_grad() if not self.noise else torch.enable_grad():
                scores.append(self.confidence(batch.to(self.device)).detach())
        n_clean = sum(b.shape[0] for b in clean)
        y = torch.cat([torch.zeros(n_clean), torch.ones(sum(b.shape[0] for b in adversarial))])
        self.classifier.fit(torch.cat(scores), y.to(scores[0].device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, noise={self.noise}, ridge={self.ridge}"
