# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Catastrophic-overfitting monitor for fast adversarial training: PGD accuracy on a held-out batch each epoch,
with a report and an optional roll-back to the last good weights."""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_robust.attacks.base import is_adversarial

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["CatastrophicOverfittingMonitor"]


class CatastrophicOverfittingMonitor:
    """Measures robust accuracy under ``attack`` (a multi-step PGD) on a fixed held-out batch after every epoch,
    and when it falls more than ``max_drop`` below the best value seen, reports catastrophic overfitting and, with
    ``rollback``, restores the network (and optimiser) to the state of the last good epoch.

    Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020,
    https://arxiv.org/abs/2001.03994 (Sec. 5: FGSM training can collapse within an epoch, PGD accuracy dropping
    to about zero; they stop early on the PGD accuracy of a training minibatch).

    ``engine.state.metrics`` receives ``"pgd_accuracy"`` (named by ``metric_name``) every epoch and
    ``"catastrophic_overfitting"`` (1.0 in an epoch where it was detected, else 0.0); ``detected_epochs`` lists
    those epochs. The good states are kept in memory (CPU copies of the ``state_dict``).

    Args:
        attack: ``attack(images, labels) -> adversarial images`` on the trained network, e.g.
            ``PGD(net, eps, num_steps=10, bounds=...)``.
        images: the held-out batch ``(N, C, *spatial)`` (not trained on), moved to the network's device.
        labels: its labels.
        max_drop: the largest tolerated fall of PGD accuracy below the best so far, in ``(0, 1]`` (0.2 = 20 points).
        rollback: restore the last good network (and ``optimizer``) state when a collapse is detected.
        optimizer: the optimiser to restore too; default the engine's ``optimizer`` attribute when it has one.
        terminate: stop the run when a collapse is detected (Wong et al.'s early stopping).
        metric_name: the name of the accuracy in ``engine.state.metrics``.

    Raises:
        ValueError: When ``max_drop`` is outside ``(0, 1]``, ``attack`` is not callable, or images and labels
            have different batch sizes.

    Example::

        >>> monitor = CatastrophicOverfittingMonitor(PGD(net, 2 / 255, num_steps=10, bounds=(0.0, 1.0)), xv, yv)
        >>> monitor.attach(trainer)
    """

    def __init__(
        self,
        attack: Any,
        images: torch.Tensor,
        labels: torch.Tensor,
        max_drop: float = 0.2,
        rollback: bool = True,
        optimizer: torch.optim.Optimizer | None = None,
        terminate: bool = False,
        metric_name: str = "pgd_accuracy",
    ) -> None:
        if not callable(attack):
            raise ValueError(f"attack must be callable(images, labels), got {attack!r}.")
        ok = isinstance(max_drop, (int, float)) and not isinstance(max_drop, bool) and math.isfinite(max_drop)
        if not ok or not (0.0 < max_drop <= 1.0):
            raise ValueError(f"max_drop must lie in (0, 1], got max_drop={max_drop!r}.")
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or len(images) != len(labels):
            raise ValueError("images and labels must be tensors with the same batch size.")
        self.attack = attack
        self.images, self.labels = images, labels
        self.max_drop = float(max_drop)
        self.rollback = bool(rollback)
        self.optimizer = optimizer
        self.terminate = bool(terminate)
        self.metric_name = metric_name
        self.best: float | None = None
        self.history: list[float] = []
        self.detected_epochs: list[int] = []
        self._good: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Runs the check at every ``EPOCH_COMPLETED`` of ``engine``."""
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def robust_accuracy(self, network: nn.Module) -> float:
        """Accuracy of ``network`` (eval mode) on the attacked held-out batch."""
        param = next(network.parameters(), None)
        device = self.images.device if param is None else param.device
        x, y = self.images.to(device), self.labels.to(device)
        adv = self.attack(x, y)
        training = network.training
        try:
            network.eval()
            with torch.no_grad():
                logits = network(adv)
        finally:
            network.train(training)
        return float((~is_adversarial(logits.float(), y)).float().mean())

    def _snapshot(self, engine: Engine) -> dict[str, Any]:
        state = {"network": {k: v.detach().cpu().clone() for k, v in engine.network.state_dict().items()}}
        opt = self.optimizer or getattr(engine, "optimizer", None)
        if opt is not None:
            state["optimizer"] = copy.deepcopy(opt.state_dict())
        return state

    def __call__(self, engine: Engine) -> None:
        acc = self.robust_accuracy(engine.network)
        self.history.append(acc)
        engine.state.metrics[self.metric_name] = acc
        if self.best is None or acc >= self.best - self.max_drop:
            self.best = acc if self.best is None else max(self.best, acc)
            self._good = self._snapshot(engine)
            engine.state.metrics["catastrophic_overfitting"] = 0.0
            return
        epoch = engine.state.epoch
        self.detected_epochs.append(epoch)
        engine.state.metrics["catastrophic_overfitting"] = 1.0
        action = "rolled back to the last good state" if self.rollback and self._good is not None else "no roll-back"
        self.logger.warning(
            f"catastrophic overfitting at epoch {epoch}: {self.metric_name}={acc:.3f}, best {self.best:.3f} "
            f"(max_drop={self.max_drop}); {action}."
        )
        if self.rollback and self._good is not None:
            engine.network.load_state_dict(self._good["network"])
            opt = self.optimizer or getattr(engine, "optimizer", None)
            if opt is not None and "optimizer" in self._good:
                opt.load_state_dict(self._good["optimizer"])
        if self.terminate:
            engine.terminate()
