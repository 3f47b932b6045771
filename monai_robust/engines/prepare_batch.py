# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``AttackBatch``: a MONAI ``PrepareBatch`` that hands a trainer (or evaluator) adversarial inputs."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch
from torch import nn

from monai_robust.engines.events import RobustEvents, register_robust_events

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AttackBatch", "call_attack", "check_attack_device"]


def _device_of(network: Any) -> torch.device | None:
    if not isinstance(network, nn.Module):
        return None
    param = next(network.parameters(), None)
    if param is None:
        param = next(network.buffers(), None)
    return None if param is None else param.device


def check_attack_device(attack: Any, device: torch.device | str | None, what: str = "the batch") -> None:
    """Raises when the attack's network lives on another device than ``device``.

    An :class:`~monai_robust.attacks.base.Attack` moves its inputs to its network's device and back without a
    word; inside a trainer that means crafting against a copy of the model on another device, or a costly
    transfer every iteration. Training code calls this check instead.

    Args:
        attack: an attack with a ``network`` attribute (anything else passes).
        device: the device of the model being trained or of the batch.
        what: how to name ``device`` in the message.

    Raises:
        ValueError: When the devices differ (the message names both).

    Example::

        >>> check_attack_device(PGD(net.cuda(), 0.01), "cpu")  # ValueError: ... is on cuda:0 but the batch is on cpu
    """
    net_device = _device_of(getattr(attack, "network", None))
    if net_device is None or device is None:
        return
    device = torch.device(device)
    if net_device.type != device.type or (
        device.index is not None and net_device.index is not None and net_device.index != device.index
    ):
        raise ValueError(
            f"the attack's network is on {net_device} but {what} is on {device}: build the attack on the model "
            "that is trained, on the trainer's device (attack = PGD(network.to(device), ...))."
        )


def call_attack(attack: Callable[..., Any], images: torch.Tensor, labels: torch.Tensor, eps: float | None) -> Any:
    """``attack(images, labels)``, with ``eps=eps`` when a budget is given (a bounded attack's call argument).

    Example::

        >>> adv = call_attack(PGD(net, bounds=(0.0, 1.0)), images, labels, eps=2 / 255)
    """
    return attack(images, labels) if eps is None else attack(images, labels, eps=eps)


class AttackBatch(PrepareBatch):
    """A ``prepare_batch`` for MONAI's ``SupervisedTrainer`` that replaces a ``ratio`` fraction of each batch by
    adversarial inputs crafted with ``attack`` (Madry et al. adversarial training when ``ratio=1``; the
    clean/adversarial mix of Goodfellow et al. otherwise).

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    https://arxiv.org/abs/1706.06083; Goodfellow, Shlens & Szegedy, ICLR 2015, https://arxiv.org/abs/1412.6572.

    ``SupervisedTrainer._iteration`` calls ``prepare_batch`` before it sets the network to train mode and before
    its autocast block, so the attack runs at its own precision (``amp``: fp32, or bf16 iterations checked in
    fp32 by default where the hardware has native bf16), in eval mode and with
    gradients on (the attack's ``attack_mode``, which restores the mode and every parameter's ``requires_grad``
    and ``.grad``); MONAI then trains on the returned inputs in train mode. The first ``round(ratio * N)``
    samples of each batch are replaced (batches are shuffled by the loader).

    Events :class:`~monai_robust.engines.events.RobustEvents` ``ATTACK_STARTED`` / ``ATTACK_COMPLETED`` fire
    around the crafting once the object is attached to the engine: pass it in ``train_handlers`` as well (MONAI
    calls ``attach``) or call ``attach(trainer)``.

    Args:
        attack: ``attack(images, labels) -> adversarial images``, usually an
            :class:`~monai_robust.attacks.base.Attack` built on the trained network (it may be another network, as
            in ensemble adversarial training, but on the same device).
        ratio: fraction of each batch replaced by adversarial inputs, in ``[0, 1]``.
        prepare_batch: the inner ``prepare_batch`` that extracts ``(images, labels[, args, kwargs])`` from the
            batch data; default MONAI's ``default_prepare_batch``. Extra network arguments are passed on
            untouched; the attack itself calls ``network(images)``.
        eps: the budget passed at each call (``attack(x, y, eps=eps)``) to a
            :class:`~monai_robust.attacks.base.BoundedAttack`, in model-input units; ``None`` (default) uses the
            attack's own. :class:`~monai_robust.handlers.eps_schedule.EpsSchedule` sets it during a warm-up.

    Raises:
        ValueError: When ``ratio`` is outside ``[0, 1]``, ``attack`` or ``prepare_batch`` is not callable, or (at
            call time) the attack's network is on another device than the trainer's.

    Example::

        >>> attack = PGD(net, eps=2 / 255, num_steps=7, bounds=(0.0, 1.0))
        >>> prepare = AttackBatch(attack, ratio=1.0)
        >>> trainer = SupervisedTrainer(device, 10, loader, net, opt, loss, prepare_batch=prepare,
        ...                             train_handlers=[prepare])
    """

    def __init__(
        self,
        attack: Callable[..., Any],
        ratio: float = 1.0,
        prepare_batch: Callable | None = None,
        eps: float | None = None,
    ) -> None:
        if not callable(attack):
            raise ValueError(f"attack must be callable(images, labels), got {attack!r}.")
        ok = isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio)
        if not ok or not (0.0 <= ratio <= 1.0):
            raise ValueError(f"ratio is the adversarial fraction of each batch and must lie in [0, 1], got {ratio!r}.")
        if prepare_batch is not None and not callable(prepare_batch):
            raise ValueError(f"prepare_batch must be callable, got {prepare_batch!r}.")
        self.attack = attack
        self.eps = eps
        self.ratio = float(ratio)
        self.prepare_batch = prepare_batch or default_prepare_batch
        self._engine: weakref.ReferenceType | None = None

    def attach(self, engine: Engine) -> None:
        """Registers :class:`RobustEvents` on ``engine`` and fires them there from now on.

        Raises:
            ValueError: When the engine's network (``engine.network``) or device is not the attack's device.
        """
        register_robust_events(engine)
        self._engine = weakref.ref(engine)
        model_device = _device_of(getattr(engine, "network", None))
        if model_device is not None:
            check_attack_device(self.attack, model_device, "the trained network")

    def __call__(
        self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> Any:
        """Returns the inner ``prepare_batch``'s tuple with its images partly replaced by adversarial ones.

        Args:
            batchdata: a batch as given to the engine (dict with ``image`` / ``label``, or a sequence).
            device: the engine's device (``engine.state.device``).
            non_blocking: as in ignite.
            kwargs: more ``Tensor.to()`` arguments.
        """
        batch = self.prepare_batch(batchdata, device, non_blocking, **kwargs)
        images, labels = batch[0], batch[1]
        n_adv = int(round(self.ratio * images.shape[0]))
        if n_adv == 0:
            return batch
        if labels is None:
            raise ValueError("AttackBatch needs labels to craft adversarial inputs; the batch has none.")
        check_attack_device(self.attack, images.device, "the batch")
        engine = self._engine() if self._engine is not None else None
        if engine is not None:
            engine.fire_event(RobustEvents.ATTACK_STARTED)
        adv = call_attack(self.attack, images[:n_adv], labels[:n_adv], self.eps)
        images = adv if n_adv == images.shape[0] else torch.cat([adv, images[n_adv:]])
        if engine is not None:
            engine.fire_event(RobustEvents.ATTACK_COMPLETED)
        return (images, labels, *batch[2:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(attack={self.attack!r}, ratio={self.ratio})"
