# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""KD + BU: kernel density of last-hidden-layer features in the predicted class, and Bayesian uncertainty from
Monte-Carlo dropout, combined by logistic regression (Feinman et al. 2017)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from monai_robust.detectors.base import Detector, Pooling, check_positive, class_probabilities, predicted_classes
from monai_robust.detectors.logistic import LogisticRegression

__all__ = ["KDBUDetector", "mc_dropout", "nearest_neighbour_bandwidth"]


@contextlib.contextmanager
def mc_dropout(network: nn.Module) -> Iterator[list[nn.Module]]:
    """Switches only the dropout layers of ``network`` (every ``nn.Dropout``/``Dropout2d``/``Dropout3d``/
    ``AlphaDropout``, found by type) to train mode, and restores their modes afterwards (also on error).

    Yields:
        The dropout modules.

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).eval()
        >>> with mc_dropout(net) as drops:
        ...     drops[0].training, net[0].training
        (True, False)
    """
    drops = [m for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in drops]
    try:
        for m in drops:
            m.train()
        yield drops
    finally:
        for m, training in zip(drops, modes):
            m.training = training


def nearest_neighbour_bandwidth(features: torch.Tensor, classes: torch.Tensor, max_samples: int = 2000) -> float:
    """Median distance from each feature to its nearest other feature of the same class (over at most
    ``max_samples`` features): a kernel width that follows the local spacing of the reference set.

    Example::

        >>> nearest_neighbour_bandwidth(torch.tensor([[0.0], [1.0], [3.0], [10.0], [14.0]]), torch.tensor([0, 0, 0, 1, 1]))
        2.0
    """
    f, c = features[:max_samples], classes[:max_samples]
    d = torch.cdist(f, f)
    other = (c[:, None] != c[None, :]) | torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
    nearest = d.masked_fill(other, math.inf).amin(dim=1)
    nearest = nearest[torch.isfinite(nearest) & (nearest > 0)]
    return float(nearest.median()) if nearest.numel() else 1.0


class KDBUDetector(Detector):
    """Kernel density (KD) and Bayesian uncertainty (BU) detector.

    Feinman, Curtin, Shintre & Gardner, "Detecting Adversarial Samples from Artifacts", arXiv 2017,
    https://arxiv.org/abs/1703.00410

    * **KD**: the log of a Gaussian kernel density ``log (1/|X_c|) sum_{x' in X_c} exp(-||phi(x) - phi(x')||^2 /
      (2 h^2))`` of the last-hidden-layer features ``phi`` of ``x`` among those of the clean fitting images ``X_c`` of
      the class ``c`` the network predicts for ``x``. The clean features are kept as a buffer (the reference set);
      while fitting, a clean image's own feature is left out of its density (leave-one-out), as for an unseen image.
      Classes come from the network's predictions on the clean images, so ``fit`` needs no labels.
    * **BU**: the variance of the class probabilities over ``num_samples`` forward passes with only the dropout
      layers in train mode (Monte-Carlo dropout), ``mean_t ||p_t||^2 - ||mean_t p_t||^2``; the dropout layers' modes
      are restored afterwards. It is random: seed ``torch`` for reproducible scores.
    * The score is the logit of a logistic regression on ``(KD, BU)`` (standardised), fitted on clean (0) versus
      adversarial (1) images; higher means more likely adversarial.

    Args:
        network: classifier ``(N, C, *spatial) -> (N, classes)``, 2D or 3D.
        layers: one name, the last hidden layer (e.g. ``("class_layers.flatten",)`` for MONAI's ``DenseNet121``).
        bandwidth: kernel width ``h`` in feature units; ``None`` (default) sets it at ``fit`` to the median distance
            from each clean fitting feature to its nearest same-class neighbour (Feinman et al. tuned ``h`` per data
            set; on PneumoniaMNIST this rule beat the median pairwise distance, see ``tutorials/``).
        num_samples: Monte-Carlo dropout passes for BU (Feinman et al.: 50); 0 uses KD only.
        pooling: how the layer output becomes a vector (``"avg"``: channel means; ``"flatten"``).
        l2: L2 penalty of the logistic regression (1e-2, about scikit-learn's ``C = 1`` for 100 samples).

    Raises:
        ValueError: When ``layers`` is not exactly one existing layer, ``bandwidth <= 0``, ``num_samples < 0``, or
            ``num_samples > 0`` for a network without a dropout layer of rate > 0; at ``fit``, when fewer than two
            clean fitting images are predicted in some class.

    Example::

        >>> det = KDBUDetector(net, layers=("pool",), num_samples=20).fit(clean_images, adversarial_images)
        >>> scores = det(test_images)  # (N,), higher = more likely adversarial

    See also:
        :class:`~monai_robust.detectors.guard.DetectorGuard` to turn scores into verdicts.
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str],
        *,
        bandwidth: float | None = None,
        num_samples: int = 50,
        pooling: str = Pooling.AVG,
        l2: float = 1e-2,
    ) -> None:
        super().__init__(network, layers, pooling=pooling)
        if len(self.layers) != 1:
            raise ValueError(f"KDBUDetector reads one layer (the last hidden layer), got layers={layers!r}.")
        self.bandwidth = None if bandwidth is None else check_positive("bandwidth", bandwidth)
        self.num_samples = check_positive("num_samples", num_samples, allow_zero=True, integer=True)
        if self.num_samples:
            rates = [m.p for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
            if not any(p > 0 for p in rates):
                raise ValueError(
                    f"Bayesian uncertainty needs dropout, but {type(network).__name__} has "
                    f"{'dropout layers all of rate 0' if rates else 'no dropout layer'}; use num_samples=0 for KD only."
                )
        for name in ("reference", "reference_classes", "kernel_bandwidth"):
            self.register_buffer(name, torch.empty(0))
        self.classifier = LogisticRegression(l2=l2)

    def log_density(
        self, features: torch.Tensor, classes: torch.Tensor, leave_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log kernel density ``(N,)`` of ``features`` ``(N, F)`` among the reference features of ``classes`` ``(N,)``.
        ``leave_out`` ``(N,)`` gives each row's own index in the reference set to exclude (-1 for none)."""
        h = self.kernel_bandwidth
        d2 = torch.cdist(features, self.reference).pow(2)  # (N, M)
        same = classes[:, None] == self.reference_classes[None, :]  # (N, M)
        if leave_out is not None:
            same = same & (leave_out[:, None] != torch.arange(self.reference.shape[0], device=features.device))
        log_k = (-d2 / (2 * h * h)).masked_fill(~same, -math.inf)
        return torch.logsumexp(log_k, dim=1) - same.sum(dim=1).clamp_min(1).log()

    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Monte-Carlo dropout uncertainty ``(N,)`` of ``x`` (``num_samples`` passes; dropout restored after)."""
        with mc_dropout(self.network):
            probs = torch.stack([class_probabilities(self.network(x).float()) for _ in range(self.num_samples)])
        return probs.pow(2).sum(dim=2).mean(dim=0) - probs.mean(dim=0).pow(2).sum(dim=1)  # (T, N, C) -> (N,)

    def statistics(self, x: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 2)`` KD and BU of ``x`` (``(N, 1)`` KD only when ``num_samples == 0``)."""
        logits, (feats,) = self.extract(x)
        stats = [self.log_density(feats.float(), predicted_classes(logits), leave_out)]
        if self.num_samples:
            stats.append(self.uncertainty(x))
        return torch.stack(stats, dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.statistics(x))

    def _fit(self, clean: list[torch.Tensor], adversarial: list[torch.Tensor]) -> None:
        logits, (feats,) = self.extract_all(clean)
        classes = predicted_classes(logits)
        num_classes = max(2, logits.shape[1])
        counts = torch.bincount(classes, minlength=num_classes)
        missing = [c for c in range(num_classes) if int(counts[c]) < 2]
        if missing:
            raise ValueError(
                f"fewer than 2 clean fitting images are predicted in class(es) {missing} (counts {counts.tolist()}): "
                "the kernel density of those classes is undefined; fit on clean images covering every class."
            )
        self.reference, self.reference_classes = feats, classes
        h = self.bandwidth if self.bandwidth is not None else nearest_neighbour_bandwidth(feats, classes)
        self.kernel_bandwidth = torch.tensor(h, device=feats.device)
        self.fitted.fill_(True)  # statistics() reads the fitted feature sizes from here on
        with torch.no_grad():
            offsets = torch.cumsum(torch.tensor([0] + [b.shape[0] for b in clean[:-1]]), 0).tolist()
            stats_clean = [
                self.statistics(b.to(self.device), torch.arange(o, o + b.shape[0], device=self.device))
                for o, b in zip(offsets, clean)
            ]
            stats_adv = [self.statistics(b.to(self.device)) for b in adversarial]
        z = torch.cat(stats_clean + stats_adv)
        y = torch.cat([torch.zeros(sum(s.shape[0] for s in stats_clean)), torch.ones(sum(s.shape[0] for s in stats_adv))])
        self.classifier.fit(z, y.to(z.device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bandwidth={self.bandwidth}, num_samples={self.num_samples}"
