# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The attack types: :class:`Attack` (what every attack shares), :class:`BoundedAttack` (an Lp budget ε given at
each call: FGSM, BIM, PGD, APGD, SMIA) and :class:`MinimizationAttack` (the smallest perturbation that fools the
model: CW, DeepFool), after foolbox's ``FixedEpsilonAttack`` / ``MinimizationAttack``; and the one iterative
gradient loop that FGSM, BIM, PGD and SMIA share.

The base does what every attack needs and none should write again (torchattacks' ``Attack.__call__`` idea,
advertorch's injectable loss, ART's argument checks):

* argument checks in ``__init__`` that quote the bad value;
* input checks on every call: shape ``(N, C, *spatial)``, finite values, inside ``bounds``, labels of the
  right shape and range for the model's output (checked on the first forward, at no extra cost);
* non-finite logits or input gradients stop the attack with :class:`NonFiniteError` (never a silent no-op);
* the model in eval mode with gradients *on* (also inside ``torch.no_grad()``), its parameters'
  ``requires_grad`` switched off so no parameter gradient is computed, and every module's mode, flag and
  ``.grad`` restored in a ``finally`` (also when the attack raises);
* seeding through MONAI's ``Randomizable`` protocol (``set_random_state``);
* mixed precision that stays exact (:mod:`~monai_robust.attacks.precision`, opt-in with ``amp=True``): FGSM, BIM,
  PGD and APGD iterate under bf16/fp16 autocast, their last iterations and the success of the result in fp32;
* the caller's type back: ndarray in, ndarray out; MetaTensor in, MetaTensor out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import Randomizable
from monai.utils import convert_to_dst_type, convert_to_tensor
from torch import nn

from monai_robust.attacks.functional import batch_view, clip_to_bounds, lp_normalize, lp_project, random_start
from monai_robust.attacks.precision import MixedPrecisionReport, exact_fp32, full_precision, low_precision_dtype
from monai_robust.attacks.threat import ThreatModel, _check_bounds, _check_eps, _unpack_threat
from monai_robust.attacks.threat import _check_positive as _check_positive  # re-exported for universal.py
from monai_robust.attacks.threat import _check_positive_int as _check_positive_int  # re-exported for universal.py
from monai_robust.utils.enums import as_lp

__all__ = [
    "Attack",
    "BoundedAttack",
    "LossFn",
    "MinimizationAttack",
    "NonFiniteError",
    "ThreatModel",
    "attack_mode",
    "default_loss",
    "is_adversarial",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits, labels)`` returning one loss per sample ``(N,)`` (a scalar is accepted too)."""


class NonFiniteError(ValueError):
    """The model returned NaN/Inf logits, or the input gradient was NaN/Inf, during an attack or a clean pass.

    An attack on such a model returns garbage (the input unchanged, or NaN images) that would read as robustness;
    it is stopped with this error instead, before any number is written.

    Example::

        >>> try:
        ...     PGD(nan_net, 0.1)(images, labels)
        ... except NonFiniteError as e:
        ...     print(e)  # PGD: the network returned NaN/Inf logits for 4 of 4 samples ...
    """


def check_finite(values: torch.Tensor, what: str, who: str) -> None:
    """Raises :class:`NonFiniteError` when ``values`` (batch first) hold NaN/Inf, naming ``what`` and ``who``.

    Example::

        >>> check_finite(torch.tensor([[1.0, float("nan")]]), "logits", "PGD")  # NonFiniteError
    """
    ok = torch.isfinite(values.detach())
    if not bool(ok.all()):
        bad = int((~ok).reshape(ok.shape[0], -1).any(dim=1).sum()) if ok.ndim else 1
        n = ok.shape[0] if ok.ndim else 1
        raise NonFiniteError(
            f"{who}: the network returned NaN/Inf {what} for {bad} of {n} samples; check the checkpoint, the "
            "preprocessing and any non-differentiable layer before attacking or evaluating it."
        )


def _take(value: float | torch.Tensor, index: torch.Tensor) -> float | torch.Tensor:
    """A per-sample ``(N,)`` tensor indexed by ``index``; a scalar as it is."""
    return value[index] if isinstance(value, torch.Tensor) and value.ndim > 0 else value


def default_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss on logits: cross-entropy for class-index labels; binary cross-entropy with logits for a
    single-logit head (labels 0/1) and for multi-label heads (labels shaped like the logits).

    Example::

        >>> default_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).shape
        torch.Size([1])
    """
    if labels.shape == logits.shape or logits.shape[1] == 1:
        target = labels.reshape(logits.shape).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)
    return F.cross_entropy(logits, labels.reshape(-1).long(), reduction="none")


def is_adversarial(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample success ``(N,)`` bool: the prediction differs from ``labels`` (untargeted) or equals the
    target ``labels`` (targeted). A single logit is thresholded at 0; multi-label heads count any flipped label.

    Example::

        >>> is_adversarial(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        tensor([False,  True])
    """
    if labels.shape == logits.shape or logits.shape[1] == 1:
        pred = (logits > 0).to(labels.dtype).reshape(labels.shape)
        same = (pred == labels).reshape(labels.shape[0], -1).all(dim=1)
    else:
        same = logits.argmax(dim=1) == labels.reshape(-1)
    return same if targeted else ~same


@contextlib.contextmanager
def attack_mode(network: nn.Module, amp: bool | torch.dtype | None = False) -> Iterator[nn.Module]:
    """Eval mode with gradients enabled for crafting, then everything exactly as before.

    Unlike MONAI's ``eval_mode`` (which also disables gradients), this enables them, switches the
    parameters' ``requires_grad`` off (only the input gradient is needed) and restores every module's
    ``training`` flag, each parameter's ``requires_grad`` and ``.grad`` afterwards, also on error.
    Autocast is disabled unless ``amp`` is True (the device's default autocast dtype) or a dtype (autocast to it),
    so crafting runs in fp32 inside an AMP training step.

    Raises:
        RuntimeError: When called inside ``torch.inference_mode()``, where no gradient can be taken.

    Example::

        >>> net = torch.nn.Linear(2, 2).train()
        >>> with torch.no_grad(), attack_mode(net):
        ...     torch.is_grad_enabled(), net.training
        (True, False)
        >>> net.training
        True
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need gradients: do not call them inside torch.inference_mode().")
    modes = [(m, m.training) for m in network.modules()]
    params = [(p, p.requires_grad, p.grad) for p in network.parameters()]
    device_type = next((p.device.type for p, _, _ in params), "cpu")
    try:
        network.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        dtype = amp if isinstance(amp, torch.dtype) else None
        with torch.enable_grad(), torch.autocast(device_type=device_type, dtype=dtype, enabled=bool(amp)):
            yield network
    finally:
        for m, training in modes:
            m.training = training
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad


class Attack(Randomizable):
    """What every attack shares: the network, the norm and box, the loss, checks, seeding and model state.

    Use :class:`BoundedAttack` (a budget ε) or :class:`MinimizationAttack` (the smallest perturbation) as the base
    of a new attack. With ``targeted=True`` the ``labels`` given to a call are the *target* classes.

    Args:
        network: the classifier, returning logits ``(N, classes)``; a ``DistributedDataParallel`` wrapper is
            attacked through its ``module`` (crafting needs no gradient synchronisation).
        lp: ``"inf"``, ``2`` or ``1``; default ``"inf"``.
        bounds: ``(low, high)`` of valid model inputs, to which adversarial images are clipped and against
            which inputs are checked; ``None`` means no box constraint. There is no silent ``[0, 1]`` default:
            take it from the data's :class:`~monai_robust.utils.LinearIntensityMap`.
        loss: ``loss(logits, labels) -> (N,)``; default :func:`default_loss`.
        targeted: move towards ``labels`` instead of away from them.
        early_stop: stop updating samples already adversarial (evaluation speed); they stay adversarial. A call
            may override it (``attack(x, y, early_stop=True)``).
        amp: run the iterations under autocast: ``None`` (default) = fp32 unless the attack's ``amp_by_default``
            (False for every attack), ``True`` = mixed precision, ``False`` = fp32; a call may override it and
            ``MONAI_ROBUST_FP32=1`` forces fp32 (:func:`~monai_robust.attacks.precision.low_precision_dtype`).

    Raises:
        ValueError: When an argument is out of range (the message quotes it).
    """

    exact_amp: bool = False
    """True for attacks whose mixed-precision calls end with the fp32 check and refinement
    (:func:`~monai_robust.attacks.precision.exact_fp32`)."""
    amp_by_default: bool = False
    """True where ``amp=None`` would mean mixed precision on native-bf16 hardware (False for every attack today)."""

    black_box: bool = False
    """True for attacks that only query the model's outputs (no gradients): the gradient-masking check compares
    them with the white-box attacks of the same norm and budget."""

    @property
    def uses_black_box(self) -> bool:
        """True when any part of the attack only queries the model's outputs: a black-box attack, or an ensemble
        holding one (AutoAttack's Square). The gradient-masking check does not count such an attack as white box:
        an ensemble's worst case includes the black-box part, so it could never lose to it."""
        return self.black_box

    def __init__(
        self,
        network: nn.Module,
        *,
        lp: str | float | None = None,
        bounds: tuple[float, float] | None = None,
        loss: LossFn | None = None,
        targeted: bool = False,
        early_stop: bool = False,
        amp: bool | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be callable(logits, labels), got {loss!r}.")
        while isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        self.network = network
        self.lp = as_lp("inf" if lp is None else lp)
        self.bounds = _check_bounds(bounds)
        self.loss = loss or default_loss
        self.targeted = bool(targeted)
        self.early_stop = bool(early_stop)
        self.amp = None if amp is None else bool(amp)
        self.last_seed: int | None = None
        self.last_precision: MixedPrecisionReport | None = None
        """The fp32 check of the last call when it ran in mixed precision (None when it ran in fp32)."""
        self._precision: torch.dtype | None = None
        self._fp32_known: tuple[torch.Tensor, torch.Tensor] | None = None  # set by perturb: see exact_fp32's known
        self._checked = False
        self._stop = self.early_stop

    def check_eps(self, eps: Any) -> float:
        """``eps`` as a float after the one budget check (finite, >= 0, at most the box width for L-inf).

        Raises:
            ValueError: When ``eps`` is not a valid budget for this attack's norm and bounds.
        """
        return _check_eps(eps, self.lp, self.bounds)

    def _run(
        self,
        images: Any,
        labels: Any,
        craft: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        early_stop: bool | None,
        amp: bool | None,
    ) -> Any:
        """Checks, seeds and places the inputs, runs ``craft`` in :func:`attack_mode`, and returns the caller's type."""
        x = self._check_images(images)
        y = self._check_labels(labels, x.shape[0])
        param = next(self.network.parameters(), None)
        device = x.device if param is None else param.device
        dtype = torch.float32 if param is None or not param.is_floating_point() else param.dtype
        self.last_seed = int(self.R.randint(0, 2**31 - 1))
        self._generator = torch.Generator(device=device).manual_seed(self.last_seed)
        self._checked = False
        self._stop = self.early_stop if early_stop is None else bool(early_stop)
        want = self.amp if amp is None else bool(amp)
        self._precision = low_precision_dtype(False if want is None and not self.amp_by_default else want, device)
        self.last_precision = None
        with attack_mode(self.network, self._precision or False):
            adv = craft(x.to(device, dtype), y.to(device)).detach()
        adv = adv.to(x.device)
        out, *_ = convert_to_dst_type(adv, images, dtype=getattr(images, "dtype", None))
        return out

    def randomize(self, data: Any = None) -> None:
        """Seeds come from ``self.R`` at each call; nothing to pre-draw."""

    # ------------------------------------------------------------------ helpers for subclasses
    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Forward pass, with the output shape and the labels checked against it on the first call.

        Raises:
            NonFiniteError: When the network returns NaN/Inf logits.
        """
        out = self.network(x)
        if not self._checked:
            self._check_output(out, x.shape[0], labels)
        check_finite(out, "logits", type(self).__name__)
        return out.float()

    def input_grad(self, score: torch.Tensor, x: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """``d score.sum() / d x``, checked finite.

        Raises:
            NonFiniteError: When the gradient holds NaN/Inf.
        """
        (grad,) = torch.autograd.grad(score.sum(), x, retain_graph=retain_graph)
        check_finite(grad, "input gradients", type(self).__name__)
        return grad

    def class_logits(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of at least two classes and ``(N,)`` class-index labels, for margin attacks (CW, DeepFool).

        A single-logit (binary) head ``f`` becomes the two logits ``[0, f]``: class 1 wins exactly when ``f > 0``,
        as in :func:`is_adversarial`.

        Raises:
            ValueError: For a multi-label head (labels shaped like logits with more than one column).
        """
        logits = self.logits(x, labels)
        if logits.shape[1] == 1:
            return torch.cat([torch.zeros_like(logits), logits], dim=1), labels.reshape(-1).long()
        if labels.shape == logits.shape:
            raise ValueError(
                f"{type(self).__name__} needs class-index labels (N,); multi-label heads are not supported, got labels "
                f"of shape {tuple(labels.shape)} for logits {tuple(logits.shape)}."
            )
        return logits, labels.reshape(-1).long()

    def objective(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-sample quantity an attack *ascends* at ``x``, and the logits there.

        Untargeted: the loss; targeted: minus the loss to the target. Subclasses (SMIA) add terms here.
        """
        logits = self.logits(x, labels)
        loss = self.loss(logits, labels)
        if loss.ndim == 0:
            loss = loss.expand(x.shape[0])
        return (-loss if self.targeted else loss), logits

    def success(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample success of the attack at these logits."""
        return is_adversarial(logits, labels, self.targeted)

    # ------------------------------------------------------------------ checks
    def _check_images(self, images: Any) -> torch.Tensor:
        x = convert_to_tensor(images, track_meta=False)
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
        if not torch.is_floating_point(x):
            x = x.float()
        if x.ndim < 3:
            raise ValueError(f"images must be (N, C, *spatial) with at least one spatial dim, got shape {tuple(x.shape)}.")
        if x.shape[0] == 0:
            raise ValueError("images is an empty batch (N=0).")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"images contain {bad} NaN/Inf values.")
        if self.bounds is not None:
            lo, hi = float(x.min()), float(x.max())
            tol = 1e-5 * (self.bounds[1] - self.bounds[0])
            if lo < self.bounds[0] - tol or hi > self.bounds[1] + tol:
                raise ValueError(
                    f"images range [{lo:g}, {hi:g}] lies outside bounds={self.bounds}; preprocess them into the "
                    "model's input range or set bounds to match the data."
                )
        return x

    @staticmethod
    def _check_labels(labels: Any, n: int) -> torch.Tensor:
        y = convert_to_tensor(labels, track_meta=False)
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
        if y.ndim == 0 or y.shape[0] != n or y.ndim > 2:
            raise ValueError(f"labels must be (N,), (N, 1) or (N, classes) with N={n}, got shape {tuple(y.shape)}.")
        if torch.is_floating_point(y) and not bool(torch.isfinite(y).all()):
            raise ValueError("labels contain NaN/Inf values.")
        return y

    def _check_output(self, out: Any, n: int, labels: torch.Tensor | None) -> None:
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network must return logits (N, classes) with N={n}, got {shape}.")
        if labels is not None:
            self._validate_labels_for(out, labels)
        self._checked = True

    @staticmethod
    def _validate_labels_for(logits: torch.Tensor, labels: torch.Tensor) -> None:
        c = logits.shape[1]
        if labels.shape == logits.shape or c == 1:
            if labels.numel() != logits.numel():
                raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}.")
            bad = labels[(labels < 0) | (labels > 1)]
            if bad.numel():
                raise ValueError(f"binary / multi-label labels must lie in [0, 1], got {bad.flatten()[0].item()!r}.")
            return
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}.")
        if torch.is_floating_point(labels) and not bool((labels == labels.round()).all()):
            raise ValueError("class-index labels must be integers, got non-integral values.")
        bad = labels[(labels < 0) | (labels >= c)]
        if bad.numel():
            raise ValueError(f"label {bad.flatten()[0].item()!r} is out of range for a model with {c} classes.")

    def __repr__(self) -> str:
        keys = ("lp", "bounds", "targeted", "early_stop") + tuple(getattr(type(self), "_repr_keys", ()))
        if isinstance(self, BoundedAttack):
            keys = ("eps",) + keys
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"


class BoundedAttack(Attack):
    """An attack within an Lp budget: ``attack(images, labels, eps=None) -> adversarial images``.

    ``eps`` is a call argument, so one object serves every budget of a sweep, an ε warm-up or a per-sample
    schedule; the constructor's ``eps`` is the default. Subclasses implement :meth:`perturb`.

    Args:
        network: the classifier, returning logits ``(N, classes)``.
        eps: the default Lp radius in model-input units, a :class:`ThreatModel` (then ``lp`` and ``bounds``
            default to its values), or ``None`` (every call then gives ``eps``).
        kwargs: ``lp``, ``bounds``, ``loss``, ``targeted``, ``early_stop``, ``amp`` as in :class:`Attack`.

    Raises:
        ValueError: When ``eps`` is negative or not finite, or another argument is out of range.

    Example::

        >>> attack = PGD(net, bounds=(0.0, 1.0), num_steps=10)
        >>> advs = {eps: attack(images, labels, eps=eps) for eps in (1 / 255, 2 / 255, 4 / 255)}
    """

    def __init__(self, network: nn.Module, eps: float | ThreatModel | None = None, **kwargs: Any) -> None:
        eps, lp, bounds = _unpack_threat(network, eps, kwargs.pop("lp", None), kwargs.pop("bounds", None))
        super().__init__(network, lp=lp, bounds=bounds, **kwargs)
        self.eps = None if eps is None else self.check_eps(eps)

    def __call__(
        self, images: Any, labels: Any, eps: float | None = None, *, early_stop: bool | None = None, amp: bool | None = None
    ) -> Any:
        """Crafts adversarial examples within ``eps``.

        Args:
            images: ``(N, C, *spatial)`` ndarray, Tensor or MetaTensor, inside ``bounds``.
            labels: ``(N,)`` or ``(N, 1)`` class indices (targets when ``targeted``), or ``(N, classes)`` 0/1
                for multi-label heads.
            eps: the Lp radius in model-input units; default the constructor's.
            early_stop: override the constructor's ``early_stop`` for this call.
            amp: override the constructor's ``amp`` for this call.

        Returns:
            Adversarial images of the same type, dtype, device and shape as ``images``.

        Raises:
            ValueError: On a bad shape, NaN/Inf, values outside ``bounds``, labels out of range or of the wrong
                shape, a model output that is not ``(N, classes)``, or no (or a bad) ``eps``.
            NonFiniteError: When the network returns NaN/Inf logits or gradients.
        """
        if eps is None and self.eps is None:
            raise ValueError(f"{type(self).__name__} was built without eps: give it at the call, attack(x, y, eps=...).")
        budget = self.eps if eps is None else self.check_eps(eps)

        def craft(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            adv = self.perturb(x, y, budget)
            if self._precision is not None and self.exact_amp:
                known, self._fp32_known = self._fp32_known, None
                adv, self.last_precision = exact_fp32(self, x, adv, y, budget, self._precision, known)
            return adv

        return self._run(images, labels, craft, early_stop, amp)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        """The attack itself at budget ``eps``, on checked float tensors on the model's device; implemented by
        subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement perturb().")

    @property
    def single_step(self) -> bool:
        """True for one-gradient-step attacks (FGSM), which the validity checks compare with iterative ones."""
        return False

    def refine(self, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor | None:
        """fp32 steps for the samples a mixed-precision call left non-adversarial in fp32 (called by
        :func:`~monai_robust.attacks.precision.exact_fp32`, autocast off), within ``eps`` and ``bounds``; None (the
        default): nothing to refine. FGSM redoes its step there, PGD with early stop runs its last steps."""
        return None

    def iterate(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        eps: float | torch.Tensor,
        step_size: float | torch.Tensor,
        num_steps: int,
        random_init: bool,
        num_restarts: int = 1,
        fp32_last: int = 0,
    ) -> torch.Tensor:
        """The one projected-gradient loop (FGSM = 1 step, BIM = no random start, PGD, SMIA).

        Each step is one forward and one backward with respect to the input:
        ``x' = clip(x + project(x' + step_size * lp_normalize(grad) - x))``. With restarts, each sample
        keeps the restart that succeeded, else the one with the highest objective. The last ``fp32_last`` steps of
        each run have autocast off (mixed precision); with early stop, success is then decided again in fp32.

        Returns:
            Adversarial images ``(N, C, *spatial)``.
        """
        best, best_score = x.clone(), None
        for _ in range(num_restarts):
            adv = x.clone()
            if random_init:
                adv = clip_to_bounds(x + random_start(x, eps, self.lp, self._generator), self.bounds)
            done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            step = batch_view(step_size, x)
            compact = self._stop and type(self).objective is Attack.objective  # per-sample objective
            if compact:  # forward only the samples not yet adversarial (all again when the fp32 steps begin)
                adv = self._ascend_active(x, adv, labels, eps, step_size, num_steps - fp32_last)
                with full_precision(x.device.type):
                    adv = self._ascend_active(x, adv, labels, eps, step_size, fp32_last) if fp32_last else adv
            for t in range(0 if compact else num_steps):
                done = done & (t != num_steps - fp32_last)  # the first fp32 step decides success again
                adv.requires_grad_(True)
                with full_precision(x.device.type) if t >= num_steps - fp32_last else contextlib.nullcontext():
                    score, logits = self.objective(adv, labels)
                    grad = self.input_grad(score, adv)
                adv = adv.detach()
                if self._stop:
                    done = done | self.success(logits.detach(), labels)
                    if bool(done.all()):
                        break
                new = adv + step * lp_normalize(grad, self.lp)
                new = clip_to_bounds(x + lp_project(new - x, eps, self.lp), self.bounds)
                adv = torch.where(batch_view(done, x).bool(), adv, new) if self._stop else new
            if num_restarts == 1:
                return adv
            with torch.no_grad(), full_precision(x.device.type):  # the restart chosen in fp32
                score, logits = self.objective(adv, labels)
                score = score + self.success(logits, labels).float() * 1e6  # success outranks any loss
            if best_score is None:
                best, best_score = adv, score
            else:
                better = score > best_score
                best = torch.where(batch_view(better, x).bool(), adv, best)
                best_score = torch.maximum(score, best_score)
        return best

    def _ascend_active(
        self,
        x: torch.Tensor,
        adv: torch.Tensor,
        labels: torch.Tensor,
        eps: float | torch.Tensor,
        step_size: float | torch.Tensor,
        num_steps: int,
    ) -> torch.Tensor:
        """The ``early_stop`` loop of :meth:`iterate` forwarding only the samples not yet adversarial: the same
        iterates as masking them with ``torch.where``, at the cost of the samples still being attacked."""
        adv = adv.clone()
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(num_steps):
            cur = adv[active].requires_grad_(True)
            score, logits = self.objective(cur, labels[active])
            grad = self.input_grad(score, cur)
            keep = ~self.success(logits.detach(), labels[active])
            if not bool(keep.any()):
                break
            active, cur, grad = active[keep], cur.detach()[keep], grad[keep]
            x0 = x[active]
            new = cur + batch_view(_take(step_size, active), cur) * lp_normalize(grad, self.lp)
            adv[active] = clip_to_bounds(x0 + lp_project(new - x0, _take(eps, active), self.lp), self.bounds)
        return adv


class MinimizationAttack(Attack):
    """An attack that looks for the smallest adversarial perturbation: ``attack(images, labels)``.

    There is no budget: a caller thresholds the returned perturbations (a sample is broken at ε when its
    adversarial lies within ε), as :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` does. Samples never
    fooled are returned **unchanged**, so ``is_adversarial(net(adv), labels)`` is the per-sample success.
    After each call :attr:`last_progress` holds the fraction of samples with an adversarial found after each
    round of the search (CW: each binary-search step; DeepFool: each iteration). Subclasses implement
    :meth:`perturb`.

    Args:
        network: the classifier, returning logits ``(N, classes)``.
        kwargs: ``lp``, ``bounds``, ``targeted``, ``early_stop``, ``amp`` as in :class:`Attack`.
    """

    def __init__(self, network: nn.Module, **kwargs: Any) -> None:
        super().__init__(network, **kwargs)
        self.last_progress: list[float] = []

    def __call__(self, images: Any, labels: Any, *, early_stop: bool | None = None, amp: bool | None = None) -> Any:
        """Crafts the smallest adversarial examples found.

        Args:
            images: ``(N, C, *spatial)`` ndarray, Tensor or MetaTensor, inside ``bounds``.
            labels: ``(N,)`` or ``(N, 1)`` class indices (targets when ``targeted``).
            early_stop: override the constructor's ``early_stop`` for this call.
            amp: override the constructor's ``amp`` for this call.

        Returns:
            Adversarial images (unchanged where the attack failed) of the same type, dtype, device and shape.

        Raises:
            ValueError: On bad images, labels or model output (as :class:`BoundedAttack`).
            NonFiniteError: When the network returns NaN/Inf logits or gradients.
        """
        self.last_progress = []
        return self._run(images, labels, self.perturb, early_stop, amp)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The search itself, on checked float tensors on the model's device; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement perturb().")
