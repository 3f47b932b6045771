# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Adversarial retraining against universal perturbations, end to end: the rate of a freshly fitted UAP before,
rounds of :class:`~monai_robust.engines.training.UAPIteration` on MONAI's ``SupervisedTrainer``, and the rate of a
freshly fitted UAP after (Hirano et al. 2021)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer

from monai_robust.attacks.base import default_loss
from monai_robust.attacks.fixed_perturbation import evaluate_uap
from monai_robust.attacks.threat import _check_positive_int
from monai_robust.attacks.universal import UniversalPerturbation
from monai_robust.data.batches import iter_image_batches, split_batch
from monai_robust.engines.training import UAPIteration

__all__ = ["RetrainingReport", "uap_adversarial_retraining"]


@dataclass
class RetrainingReport:
    """What :func:`uap_adversarial_retraining` measured.

    Args:
        fooling_rate_before: rate (fooling, or targeted success for a targeted fitter) on the evaluation images of
            a UAP fitted on the original model.
        fooling_rate_after: the same for a UAP freshly fitted on the retrained model.
        round_rates: per round, the rate of the UAP used for fine-tuning, on its fitting images.
        clean_accuracy_before: accuracy on the evaluation images before retraining (when they have labels).
        clean_accuracy_after: the same after retraining.
        metric: ``"fooling_rate"`` or ``"targeted_success_rate"``.

    Example::

        >>> report = uap_adversarial_retraining(fitter, train, optimizer, eval_source=test)
        >>> report.fooling_rate_before - report.fooling_rate_after  # > 0: retraining helped
    """

    fooling_rate_before: float
    fooling_rate_after: float
    round_rates: list[float]
    clean_accuracy_before: float | None
    clean_accuracy_after: float | None
    metric: str = "fooling_rate"


class _LabelledBatches:
    """A re-iterable of ``{"image", "label"}`` batches over any source, shuffled by ``generator`` when the source is
    a tensor or mapping; refuses a batch without labels."""

    def __init__(self, source: Any, batch_size: int, generator: torch.Generator) -> None:
        self.source, self.batch_size, self.generator = source, batch_size, generator

    def epoch_length(self) -> int | None:
        """Batches per epoch: cut from a tensor or mapping source, else the source's own length (``None`` when it has
        none: Ignite then counts the first epoch)."""
        if isinstance(self.source, (torch.Tensor, np.ndarray)) or (isinstance(self.source, Mapping) and "image" in self.source):
            return math.ceil(split_batch(self.source, "train_source")[0].shape[0] / self.batch_size)
        return len(self.source) if isinstance(self.source, Sized) else None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i, (x, y) in enumerate(iter_image_batches(self.source, self.batch_size, self.generator)):
            if y is None:
                raise ValueError(f"batch {i} of train_source has no labels: retraining needs labels.")
            yield {"image": x, "label": y}


def uap_adversarial_retraining(
    fitter: UniversalPerturbation,
    train_source: Any,
    optimizer: torch.optim.Optimizer,
    *,
    eval_source: Any,
    rounds: int = 3,
    epochs: int = 1,
    mix: float = 0.5,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> RetrainingReport:
    """Adversarial retraining against UAPs: rounds of "fit a UAP on the training images, then fine-tune on a mix of
    clean and UAP-perturbed training images (true labels kept)", reporting the rate of a freshly fitted UAP on the
    evaluation images before and after.

    Hirano, Minagi & Takemoto, "Universal adversarial attacks on deep neural networks for medical image
    classification", BMC Med Imaging 2021, https://doi.org/10.1186/s12880-020-00530-y (adversarial retraining).

    The fine-tuning is MONAI's ``SupervisedTrainer`` with :class:`~monai_robust.engines.training.UAPIteration`
    (``refit_every=epochs``, ``rounds * epochs`` epochs). The model ``fitter.network`` is trained in place; its
    training flag is restored at the end. The fresh UAPs are fitted with ``fitter`` on ``train_source`` and measured
    with :func:`~monai_robust.attacks.fixed_perturbation.evaluate_uap` on ``eval_source``.

    Args:
        fitter: a configured :class:`~monai_robust.attacks.universal.IterativeUAP` or ``SGDUAP`` holding the network.
        train_source: training images *with labels* (a ``{"image", "label"}`` mapping, cut into batches of
            ``fitter.batch_size`` and shuffled every epoch, or a DataLoader of such batches / ``(image, label)``
            tuples).
        optimizer: optimiser over the network's parameters.
        eval_source: held-out images (labels optional) for the before/after rates.
        rounds: fit/fine-tune rounds (>= 1).
        epochs: fine-tuning epochs per round (>= 1).
        mix: fraction of each training batch replaced by its UAP-perturbed version, in [0, 1].
        loss: ``loss(logits, labels)`` to minimise (its mean over the batch); default cross-entropy.
        seed: seeds the shuffling of a tensor source and the choice of perturbed images.

    Returns:
        A :class:`RetrainingReport`.

    Raises:
        ValueError: When a training batch has no labels or an argument is out of range.

    Example::

        >>> fitter = SGDUAP(net, zeta=0.04, bounds=(0.0, 1.0), max_passes=5)
        >>> report = uap_adversarial_retraining(fitter, train, torch.optim.Adam(net.parameters(), 1e-4),
        ...                                     eval_source=test, rounds=3)
        >>> report.fooling_rate_before, report.fooling_rate_after
    """
    if not isinstance(fitter, UniversalPerturbation):
        raise ValueError(f"fitter must be an IterativeUAP or SGDUAP, got {type(fitter).__name__}.")
    rounds, epochs = _check_positive_int("rounds", rounds), _check_positive_int("epochs", epochs)
    if not (isinstance(mix, (int, float)) and not isinstance(mix, bool) and math.isfinite(mix) and 0 <= mix <= 1):
        raise ValueError(f"mix must lie in [0, 1], got mix={mix!r}.")
    if loss is not None and not callable(loss):
        raise ValueError(f"loss must be callable(logits, labels), got {loss!r}.")
    net = fitter.network
    param = next(net.parameters(), None)
    device = torch.device("cpu") if param is None else param.device

    def fresh_rate() -> tuple[float, float | None]:
        res = fitter.fit(train_source)
        ev = evaluate_uap(net, res.delta, eval_source, bounds=fitter.bounds, target=fitter.target)
        return ev.get("targeted_success_rate", ev["fooling_rate"]), ev.get("clean_accuracy")

    rate_before, acc_before = fresh_rate()
    iteration = UAPIteration(fitter, train_source, mix=mix, refit_every=epochs, seed=seed, clean_metrics=False)
    data = _LabelledBatches(train_source, fitter.batch_size, iteration.generator)  # one stream: order, then mix
    was_training = net.training
    try:
        with warnings.catch_warnings():  # MONAI warns that the default 'decollate' and metrics are unused here
            warnings.simplefilter("ignore", UserWarning)
            trainer = SupervisedTrainer(
                device, rounds * epochs, data, net, optimizer, loss or default_loss,
                epoch_length=data.epoch_length(), iteration_update=iteration, train_handlers=[iteration], decollate=False,
            )
        trainer.run()
    finally:
        net.train(was_training)
    rate_after, acc_after = fresh_rate()
    return RetrainingReport(rate_before, rate_after, list(iteration.fit_rates), acc_before, acc_after, fitter.metric)
