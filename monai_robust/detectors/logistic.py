# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A small binary classifier in torch, fitted by L-BFGS, with its weights and feature standardisation as buffers:
the last stage of every detector (scikit-learn is not needed to fit it, nor NumPy to run it)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from monai_robust.detectors.base import FittedModule, check_positive

__all__ = ["LogisticRegression"]


class LogisticRegression(FittedModule):
    """Logistic regression ``logit = w · (x - mean) / std + b`` (``hidden_units = 0``), or a one-hidden-layer
    perceptron ``logit = w2 · relu(W1 (x - mean) / std + b1) + b2`` (``hidden_units > 0``).

    Fitted full-batch by L-BFGS (strong-Wolfe line search) in float64 on the binary cross-entropy, with the two
    classes weighted equally (``balanced``) and an L2 penalty on the weights (not the biases). The mean and standard
    deviation of the features are stored with the weights, so a fitted model is one ``state_dict``.

    Args:
        l2: L2 penalty (>= 0) on the weights of the standardised features (the loss is the mean over samples);
            1e-2 by default, about scikit-learn's ``C = 1`` for 100 samples.
        max_iter: L-BFGS iterations (>= 1).
        balanced: weight each class by half the inverse of its count, so unequal clean/adversarial counts do not
            shift the decision.
        hidden_units: 0 for logistic regression; ``> 0`` for one hidden ReLU layer of that width.
        seed: seed of the hidden layer's initial weights.

    Raises:
        ValueError: When an argument is out of range (the message quotes it).

    Example::

        >>> lr = LogisticRegression().fit(torch.randn(100, 3), torch.arange(100) % 2)
        >>> lr(torch.randn(5, 3)).shape
        torch.Size([5])
    """

    def __init__(
        self, l2: float = 1e-2, max_iter: int = 200, balanced: bool = True, hidden_units: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.l2 = check_positive("l2", l2, allow_zero=True)
        self.max_iter = check_positive("max_iter", max_iter, integer=True)
        self.hidden_units = check_positive("hidden_units", hidden_units, allow_zero=True, integer=True)
        self.balanced = bool(balanced)
        self.seed = int(seed)
        for name in ("mean", "std", "weight", "bias", "hidden_weight", "hidden_bias"):
            self.register_buffer(name, torch.empty(0))

    def fit(self, features: Any, labels: Any) -> LogisticRegression:
        """Fits the classifier.

        Args:
            features: ``(N, F)`` finite features.
            labels: ``(N,)`` 0 (clean) / 1 (adversarial).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: On a shape mismatch, non-finite features, labels other than 0/1, or a single class present.
        """
        x = torch.as_tensor(features).detach()
        y = torch.as_tensor(labels, device=x.device).detach().reshape(-1)
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"features must be (N, F) with N = len(labels), got {tuple(x.shape)} and {tuple(y.shape)}.")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features contain NaN/Inf values.")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"labels must be 0 (clean) or 1 (adversarial), got values {torch.unique(y).tolist()}.")
        counts = torch.stack([(y == 0).sum(), (y == 1).sum()])
        if bool((counts == 0).any()):
            raise ValueError(f"fitting needs both classes, got {int(counts[0])} clean and {int(counts[1])} adversarial.")
        x, y = x.double(), y.double()
        mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))  # constant features: leave as is
        z = (x - mean) / std
        w_sample = (0.5 / counts.double())[y.long()] if self.balanced else torch.full_like(y, 1.0 / y.numel())
        n_features = x.shape[1]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        if self.hidden_units:
            h = self.hidden_units
            w1 = torch.randn(h, n_features, generator=gen, dtype=torch.float64) / n_features**0.5
            w2 = torch.randn(h, generator=gen, dtype=torch.float64) / h**0.5
            params = [w1, torch.zeros(h, dtype=torch.float64), w2]
        else:
            params = [torch.zeros(n_features, dtype=torch.float64)]
        params.append(torch.zeros((), dtype=torch.float64))
        params = [p.to(x.device).requires_grad_(True) for p in params]
        optimizer = torch.optim.LBFGS(params, max_iter=self.max_iter, history_size=10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logit = self._logit(z, *params)
            loss = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w_sample).sum()
            weights = params[:-1:2] if self.hidden_units else params[:1]  # W1 and w2, or w
            loss = loss + 0.5 * self.l2 * sum((w**2).sum() for w in weights)
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        dtype = torch.float32
        self.mean, self.std = mean.to(dtype), std.to(dtype)
        if self.hidden_units:
            self.hidden_weight, self.hidden_bias = params[0].detach().to(dtype), params[1].detach().to(dtype)
            self.weight = params[2].detach().to(dtype)
        else:
            self.hidden_weight, self.hidden_bias = torch.empty(0, device=x.device), torch.empty(0, device=x.device)
            self.weight = params[0].detach().to(dtype)
        self.bias = params[-1].detach().to(dtype)
        self.fitted.fill_(True)
        return self

    @staticmethod
    def _logit(z: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        if len(params) == 4:
            w1, b1, w2, b2 = params
            return torch.relu(z @ w1.T + b1) @ w2 + b2  # (N, F) -> (N, H) -> (N,)
        w, b = params
        return z @ w + b

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Decision function (logit) ``(N,)`` of ``(N, F)`` features; positive means "adversarial".

        Raises:
            RuntimeError: When not fitted.
            ValueError: When the feature count differs from the one fitted.
        """
        self._check_fitted()
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"expected features (N, {self.mean.shape[0]}) as in fit, got shape {tuple(features.shape)}."
            )
        z = (features.to(self.mean.dtype) - self.mean) / self.std
        if self.hidden_weight.numel():  # the loaded state decides, whatever hidden_units this instance was built with
            return self._logit(z, self.hidden_weight, self.hidden_bias, self.weight, self.bias)
        return self._logit(z, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"l2={self.l2}, max_iter={self.max_iter}, balanced={self.balanced}, hidden_units={self.hidden_units}"
