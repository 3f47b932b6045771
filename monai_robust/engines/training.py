# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Adversarial training on MONAI's ``SupervisedTrainer``: ``iteration_update`` callables for the losses that need
the adversarial view (PGD-AT, fast AT) or both views (TRADES), plus UAP retraining.

Each class is called as ``iteration(engine, batchdata)`` in place of ``SupervisedTrainer._iteration`` (the shape of
MONAI's ``deepgrow.interaction.Interaction``). One iteration: MONAI's ``prepare_batch``; the attack (fp32, eval mode,
gradients on, parameters' ``requires_grad`` and ``.grad`` restored: the attack's ``attack_mode``) between the
:class:`~monai_robust.engines.events.RobustEvents` ``ATTACK_STARTED`` / ``ATTACK_COMPLETED``; a forward-only clean
pass in eval mode for the clean metrics (``clean_metrics=True``); then, in train mode and under autocast when the
trainer has ``amp=True``, the training loss, its backward (through the trainer's ``GradScaler`` when it is enabled)
and the optimiser step, with MONAI's ``IterationEvents`` and gradient accumulation (``accumulation_steps``).

``engine.state.output`` holds ``image`` (the inputs trained on), ``label``, ``pred`` (their logits), ``loss`` and the
scalars of :class:`AdversarialKeys` (``clean_loss``, ``clean_acc`` from the eval-mode clean pass; ``adv_loss``,
``adv_acc`` from the training forward, in train mode, so BatchNorm uses batch statistics there): log them with
``TensorBoardStatsHandler(output_transform=adversarial_output_transform)`` per iteration, and per epoch through
:func:`adversarial_metrics`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from monai.networks.utils import eval_mode
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys, StrEnum
from torch import nn

from monai_robust.attacks.base import Attack, is_adversarial
from monai_robust.attacks.pgd import PGD
from monai_robust.attacks.threat import _check_positive
from monai_robust.engines.events import RobustEvents, register_robust_events
from monai_robust.engines.prepare_batch import call_attack, check_attack_device

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from ignite.metrics import Average
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
    Average, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Average")

__all__ = [
    "AdversarialIteration",
    "AdversarialKeys",
    "FastATIteration",
    "PGDATIteration",
    "TRADESIteration",
    "UAPIteration",
    "adversarial_metrics",
    "adversarial_output_transform",
    "trades_kl",
]


class AdversarialKeys(StrEnum):
    """Scalars an adversarial iteration adds to ``engine.state.output`` (batch means)."""

    CLEAN_LOSS = "clean_loss"
    ADV_LOSS = "adv_loss"
    CLEAN_ACC = "clean_acc"
    ADV_ACC = "adv_acc"


def adversarial_output_transform(output: Any) -> dict[str, float]:
    """``{"loss", "clean_loss", "adv_loss", "clean_acc", "adv_acc"}`` of an iteration, from a decollated (list) or
    a dict ``engine.state.output``; for ``StatsHandler`` / ``TensorBoardStatsHandler(output_transform=...)``.

    Example::

        >>> TensorBoardStatsHandler(log_dir, output_transform=adversarial_output_transform).attach(trainer)
    """
    first = output[0] if isinstance(output, (list, tuple)) else output
    keys = [str(CommonKeys.LOSS), *(k.value for k in AdversarialKeys)]
    return {k: float(first[k]) for k in keys if k in first}


def adversarial_metrics() -> dict[str, Any]:
    """Epoch averages of :class:`AdversarialKeys` as ignite ``Average`` metrics, named by their key.

    Pass them to the trainer (``key_train_metric={"adv_acc": m.pop("adv_acc")}, additional_metrics=m``) so that
    they are computed before the epoch-level handlers (TensorBoard, checkpoints) run.

    Example::

        >>> m = adversarial_metrics()
        >>> trainer = SupervisedTrainer(..., key_train_metric={"adv_acc": m.pop("adv_acc")}, additional_metrics=m)
    """
    return {k.value: Average(output_transform=lambda out, k=k.value: adversarial_output_transform(out)[k]) for k in AdversarialKeys}


def trades_kl(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(target_probs || softmax(logits))`` ``(N,)``: the TRADES robustness term, and the objective
    its inner maximisation ascends (as an :class:`~monai_robust.attacks.base.Attack` ``loss`` with the clean
    probabilities passed as labels).

    Example::

        >>> trades_kl(torch.zeros(2, 3), torch.full((2, 3), 1 / 3))
        tensor([0., 0.])
    """
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target_probs.float(), reduction="none").sum(dim=1)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((~is_adversarial(logits.detach().float(), labels)).float().mean())


def _base_network(network: nn.Module) -> nn.Module:
    return getattr(network, "_orig_mod", network)  # torch.compile wraps the module


class AdversarialIteration:
    """Base of the adversarial ``iteration_update`` callables: batch preparation, crafting between events, the
    clean metrics, then one training step (train mode, AMP, scaler, accumulation, MONAI's iteration events).

    Subclasses implement :meth:`craft` and :meth:`compute_loss`.

    Args:
        attack: the attack that crafts the adversarial inputs, built on the trained network and device.
        clean_metrics: also run a forward-only clean pass in eval mode for ``clean_loss`` / ``clean_acc``
            (about a third of a training step); with ``False`` those keys are absent.

    Raises:
        ValueError: When ``attack`` is not callable, or (at call time) it lives on another device than the batch,
            the batch carries extra network arguments, or ``batchdata`` is None.

    Example::

        >>> class MixedIteration(AdversarialIteration):  # a new loss: override compute_loss (and craft)
        ...     def compute_loss(self, engine, images, adv, labels):
        ...         logits = engine.network(torch.cat([images, adv]))
        ...         return engine.loss_function(logits, torch.cat([labels, labels])).mean(), logits[len(images):]
    """

    def __init__(self, attack: Callable[..., Any], *, clean_metrics: bool = True) -> None:
        if not callable(attack):
            raise ValueError(f"attack must be callable(images, labels), got {attack!r}.")
        self.attack = attack
        self.eps: float | None = None
        """The budget passed to a bounded attack at each call (``None``: the attack's own); set by
        :class:`~monai_robust.handlers.eps_schedule.EpsSchedule` during a warm-up."""
        self.clean_metrics = bool(clean_metrics)

    # ------------------------------------------------------------------ hooks for subclasses
    def craft(self, engine: Engine, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The inputs to train on; default ``attack(images, labels)`` (with ``eps=self.eps`` when set)."""
        return call_attack(self.attack, images, labels, self.eps)

    def compute_loss(
        self, engine: Engine, images: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(training loss, logits of adv)``, in train mode and under the trainer's autocast; default
        ``loss_function(network(adv), labels).mean()``."""
        logits = engine.inferer(adv, engine.network)
        return engine.loss_function(logits, labels).mean(), logits

    def attach(self, engine: Engine) -> None:
        """Registers :class:`RobustEvents` on ``engine`` (so handlers can be added for them before the run) and
        checks the attack's device against the engine's network.

        Raises:
            ValueError: When the devices differ.
        """
        register_robust_events(engine)
        network = getattr(engine, "network", None)  # MONAI attaches train_handlers before it sets engine.network
        param = next(network.parameters(), None) if isinstance(network, nn.Module) else None
        if param is not None:
            check_attack_device(self.attack, param.device, "the trained network")

    # ------------------------------------------------------------------ the iteration
    def __call__(self, engine: Engine, batchdata: Any) -> dict[str, Any]:
        """One adversarial training iteration of ``engine`` (a MONAI ``SupervisedTrainer``) on ``batchdata``."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        images, labels = batch[0], batch[1]
        if len(batch) > 2 and (batch[2] or batch[3]):
            raise ValueError("adversarial iterations call network(images): extra network arguments are not supported.")
        register_robust_events(engine)
        check_attack_device(self.attack, images.device, "the batch")
        network = engine.network

        engine.fire_event(RobustEvents.ATTACK_STARTED)
        self._clean_logits: torch.Tensor | None = None  # craft() may leave eval-mode clean logits here
        adv = self.craft(engine, images, labels)
        engine.fire_event(RobustEvents.ATTACK_COMPLETED)
        if self.clean_metrics and self._clean_logits is None:
            with eval_mode(network):
                self._clean_logits = engine.inferer(images, network)

        acc = int(getattr(engine, "accumulation_steps", 1))
        local = (engine.state.iteration - 1) % (engine.state.epoch_length or engine.state.iteration)
        zero_grad = acc == 1 or local % acc == 0
        step = acc == 1 or (local + 1) % acc == 0 or (local + 1) == engine.state.epoch_length
        network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        engine.state.output = {CommonKeys.IMAGE: adv, CommonKeys.LABEL: labels}
        amp = bool(engine.amp)
        device_type = adv.device.type
        autocast = torch.autocast(device_type, **engine.amp_kwargs) if amp else contextlib.nullcontext()
        with autocast:
            loss, adv_logits = self.compute_loss(engine, images, adv, labels)
        engine.state.output[CommonKeys.PRED] = adv_logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[CommonKeys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        scaler = getattr(engine, "scaler", None)
        scaler = scaler if amp and scaler is not None and scaler.is_enabled() else None
        scaled = loss / acc if acc > 1 else loss
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if step:
            if scaler is not None:
                scaler.step(engine.optimizer)
                scaler.update()
            else:
                engine.optimizer.step()

        with torch.no_grad():
            out = engine.state.output
            out[CommonKeys.LOSS] = loss.detach()
            out[AdversarialKeys.ADV_LOSS.value] = float(engine.loss_function(adv_logits.float(), labels).mean())
            out[AdversarialKeys.ADV_ACC.value] = _accuracy(adv_logits, labels)
            if self._clean_logits is not None:
                clean = self._clean_logits.float()
                out[AdversarialKeys.CLEAN_LOSS.value] = float(engine.loss_function(clean, labels).mean())
                out[AdversarialKeys.CLEAN_ACC.value] = _accuracy(clean, labels)
        self._clean_logits = None
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def __repr__(self) -> str:
        return f"{type(self).__name__}(attack={self.attack!r})"


class PGDATIteration(AdversarialIteration):
    """Adversarial training on the worst case found by an attack (PGD-AT), optionally mixed with the clean loss:
    ``(1 - clean_weight) * L(f(x_adv), y) + clean_weight * L(f(x), y)``.

    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018, https://arxiv.org/abs/1706.06083 (``clean_weight=0``); the mixed objective is Goodfellow et al.'s,
    ICLR 2015.

    Args:
        attack: usually :class:`~monai_robust.attacks.pgd.PGD` on the trained network (any attack works).
        clean_weight: weight of the clean loss in ``[0, 1)``; its clean forward runs in train mode.
        clean_metrics: as in :class:`AdversarialIteration`.

    Raises:
        ValueError: When ``clean_weight`` is outside ``[0, 1)`` or ``attack`` is not callable.

    Example::

        >>> attack = PGD(net, eps=2 / 255, num_steps=7, bounds=(0.0, 1.0))
        >>> trainer = SupervisedTrainer(device, 10, loader, net, opt, torch.nn.CrossEntropyLoss(),
        ...                             iteration_update=PGDATIteration(attack))
    """

    def __init__(self, attack: Callable[..., Any], *, clean_weight: float = 0.0, clean_metrics: bool = True) -> None:
        super().__init__(attack, clean_metrics=clean_metrics)
        ok = isinstance(clean_weight, (int, float)) and not isinstance(clean_weight, bool)
        if not ok or not (0.0 <= clean_weight < 1.0):
            raise ValueError(f"clean_weight must lie in [0, 1), got clean_weight={clean_weight!r}.")
        self.clean_weight = float(clean_weight)

    def compute_loss(
        self, engine: Engine, images: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = super().compute_loss(engine, images, adv, labels)
        if self.clean_weight > 0:
            clean = engine.loss_function(engine.inferer(images, engine.network), labels).mean()
            loss = (1.0 - self.clean_weight) * loss + self.clean_weight * clean
        return loss, logits


class FastATIteration(PGDATIteration):
    """Fast adversarial training: FGSM from a uniform random start in the L-inf ball with step ``alpha * eps``
    (default 1.25 eps), projected back onto the ball, then training on it.

    Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020,
    https://arxiv.org/abs/2001.03994. Fast AT can collapse ("catastrophic overfitting": PGD accuracy falls to
    about zero within an epoch while FGSM accuracy rises); watch it with
    :class:`~monai_robust.handlers.catastrophic_overfitting.CatastrophicOverfittingMonitor`.

    Args:
        network: the trained network (on the trainer's device).
        eps: L-inf radius in model-input units.
        alpha: FGSM step as a multiple of ``eps`` (> 0); Wong et al. use 1.25.
        bounds: ``(low, high)`` of valid inputs, or ``None``.
        lp: the threat model's norm; ``"inf"`` as in the paper (``2`` works with the L2 steps).
        clean_weight: as in :class:`PGDATIteration`.
        clean_metrics: as in :class:`AdversarialIteration`.

    Raises:
        ValueError: When ``eps < 0``, ``alpha <= 0`` or another argument is out of range.

    Example::

        >>> trainer = SupervisedTrainer(device, 10, loader, net, opt, torch.nn.CrossEntropyLoss(),
        ...                             iteration_update=FastATIteration(net, eps=2 / 255, bounds=(0.0, 1.0)))
    """

    def __init__(
        self,
        network: nn.Module,
        eps: float,
        *,
        alpha: float = 1.25,
        bounds: tuple[float, float] | None = None,
        lp: str | float = "inf",
        clean_weight: float = 0.0,
        clean_metrics: bool = True,
    ) -> None:
        self.alpha = _check_positive("alpha", alpha)
        attack = PGD(network, eps, num_steps=1, random_start=True, lp=lp, bounds=bounds, rel_step_size=self.alpha)
        super().__init__(attack, clean_weight=clean_weight, clean_metrics=clean_metrics)


class TRADESIteration(AdversarialIteration):
    """TRADES: ``L(f(x), y) + beta * KL(f(x) || f(x_adv))``, with ``x_adv`` maximising the KL term inside the
    attack's budget.

    Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019, https://arxiv.org/abs/1901.08573 (Algorithm 1; ``beta = 1 / lambda``, 6 in the paper).

    The inner maximisation uses ``attack``'s budget, steps and start but ascends :func:`trades_kl` to the clean
    prediction (computed in eval mode, without gradient, as in the authors' code) instead of its own loss; the
    attack object itself is not modified. The authors start from ``x + 0.001 * N(0, 1)``; here the start is the
    attack's (uniform in the ball for :class:`~monai_robust.attacks.pgd.PGD`). Both terms are trained in train
    mode with two forwards (clean, adversarial), as in the authors' code. Needs at least two logits.

    Args:
        attack: a :class:`~monai_robust.attacks.base.Attack` (usually PGD) on the trained network.
        beta: weight of the robustness term (> 0).
        clean_metrics: as in :class:`AdversarialIteration` (free here: the crafting computes the clean logits).

    Raises:
        ValueError: When ``beta <= 0``, ``attack`` is not an ``Attack`` or is targeted, or (at call time) the
            network has a single logit.

    Example::

        >>> attack = PGD(net, eps=2 / 255, num_steps=10, bounds=(0.0, 1.0))
        >>> trainer = SupervisedTrainer(device, 10, loader, net, opt, torch.nn.CrossEntropyLoss(),
        ...                             iteration_update=TRADESIteration(attack, beta=6.0))
    """

    def __init__(self, attack: Attack, *, beta: float = 6.0, clean_metrics: bool = True) -> None:
        if not isinstance(attack, Attack):
            raise ValueError(f"TRADES needs an Attack (its inner loss is replaced), got {type(attack).__name__}.")
        if attack.targeted:
            raise ValueError("TRADES maximises the divergence from the clean prediction: use an untargeted attack.")
        super().__init__(attack, clean_metrics=clean_metrics)
        self.beta = _check_positive("beta", beta)

    def craft(self, engine: Engine, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with eval_mode(engine.network):
            logits = engine.inferer(images, engine.network)
        if logits.shape[1] < 2:
            raise ValueError(f"TRADES needs at least two logits, the network returns {logits.shape[1]}.")
        self._clean_logits = logits
        inner = copy.copy(self.attack)  # shares the network and the random state, not the settings
        inner.loss, inner.early_stop, inner.targeted = trades_kl, False, False
        return call_attack(inner, images, torch.softmax(logits.float(), dim=1), self.eps)

    def compute_loss(
        self, engine: Engine, images: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        clean_logits = engine.inferer(images, engine.network)
        adv_logits = engine.inferer(adv, engine.network)
        natural = engine.loss_function(clean_logits, labels).mean()
        robust = trades_kl(adv_logits, torch.softmax(clean_logits.float(), dim=1)).mean()  # batchmean, as the paper
        return natural + self.beta * robust, adv_logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(attack={self.attack!r}, beta={self.beta})"


class UAPIteration(AdversarialIteration):
    """Adversarial retraining against a universal perturbation: a UAP is refitted on the current model every
    ``refit_every`` epochs (at ``EPOCH_STARTED``), and each iteration trains on a batch where a ``mix`` fraction of
    the images carries it (true labels kept).

    Hirano, Minagi & Takemoto, "Universal adversarial attacks on deep neural networks for medical image
    classification", BMC Med Imaging 2021, https://doi.org/10.1186/s12880-020-00530-y (adversarial retraining);
    the engine form of :func:`monai_robust.attacks.universal.uap_adversarial_retraining`.

    Args:
        fitter: an :class:`~monai_robust.attacks.universal.SGDUAP` or ``IterativeUAP`` on the trained network.
        fit_source: the images the UAP is fitted on (a tensor, ``{"image": ...}`` mapping or DataLoader).
        mix: probability that an image of a batch is perturbed, in ``[0, 1]``.
        refit_every: refit period in epochs (>= 1).
        seed: seeds the choice of perturbed images.
        clean_metrics: as in :class:`AdversarialIteration`.

    Raises:
        ValueError: When ``mix`` is outside ``[0, 1]``, ``refit_every < 1``, or ``fitter`` is not a UAP fitter.

    Example::

        >>> fitter = SGDUAP(net, zeta=0.04, bounds=(0.0, 1.0), max_passes=3)
        >>> it = UAPIteration(fitter, train_images, mix=0.5)
        >>> trainer = SupervisedTrainer(..., iteration_update=it, train_handlers=[it])
    """

    def __init__(
        self,
        fitter: Any,
        fit_source: Any,
        *,
        mix: float = 0.5,
        refit_every: int = 1,
        seed: int = 0,
        clean_metrics: bool = True,
    ) -> None:
        from monai_robust.attacks.universal import UniversalPerturbation

        if not isinstance(fitter, UniversalPerturbation):
            raise ValueError(f"fitter must be an SGDUAP or IterativeUAP, got {type(fitter).__name__}.")
        ok = isinstance(mix, (int, float)) and not isinstance(mix, bool) and math.isfinite(mix)
        if not ok or not (0.0 <= mix <= 1.0):
            raise ValueError(f"mix must lie in [0, 1], got mix={mix!r}.")
        if not isinstance(refit_every, int) or isinstance(refit_every, bool) or refit_every < 1:
            raise ValueError(f"refit_every must be an integer >= 1, got refit_every={refit_every!r}.")
        super().__init__(fitter.fit, clean_metrics=clean_metrics)
        self.fitter = fitter
        self.fit_source = fit_source
        self.mix = float(mix)
        self.refit_every = refit_every
        self.generator = torch.Generator().manual_seed(int(seed))
        self.result: Any = None
        self.fit_rates: list[float] = []

    def attach(self, engine: Engine) -> None:
        """Registers the events and the refit at ``EPOCH_STARTED`` (every ``refit_every`` epochs)."""
        register_robust_events(engine)
        network = getattr(engine, "network", None)
        param = next(network.parameters(), None) if isinstance(network, nn.Module) else None
        if param is not None:
            check_attack_device(self.fitter, param.device, "the trained network")
        if not engine.has_event_handler(self.refit, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.refit)

    def refit(self, engine: Engine) -> None:
        """Fits a new UAP on ``fit_source`` with the current model (every ``refit_every`` epochs)."""
        if self.result is not None and (engine.state.epoch - 1) % self.refit_every != 0:
            return
        self.result = self.fitter.fit(self.fit_source)
        self.fit_rates.append(float(self.result.rate))
        engine.state.metrics["uap_fit_rate"] = self.fit_rates[-1]

    def craft(self, engine: Engine, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from monai_robust.attacks.universal import perturb_fraction

        if self.result is None:
            self.refit(engine)  # not attached: fit once on the first iteration
        mixed, _ = perturb_fraction(images, self.result.delta, self.mix, self.fitter.bounds, self.generator)
        return mixed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fitter={type(self.fitter).__name__}, mix={self.mix}, refit_every={self.refit_every})"
