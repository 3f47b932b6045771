# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Universal adversarial perturbations (UAPs): one δ, fitted once, that changes a classifier's decision on most
inputs, non-targeted or towards a target class, in 2D and 3D.

* :class:`IterativeUAP`: the passes of Moosavi-Dezfooli et al. (2017) with an FGSM or DeepFool inner attack, and
  the targeted variant of Hirano & Takemoto (2020), both as used on medical images by Hirano et al. (2021);
  minibatched (see the class for the exact deviation from the per-image loop).
* :class:`SGDUAP`: projected stochastic gradient ascent on δ with a clamped loss (Shafahi et al. 2020): the fast
  default, on the model's device.
* Budgets as an absolute ``eps`` or as ζ, ``||δ||_p = ζ · mean ||x||_p`` over the fitting (or reference) images.
* Speed (the base :class:`~monai_robust.attacks.universal_base.UniversalPerturbation`): a fit stops as soon as the
  exact (fp32) rate on the fitting images reaches ``target_rate``, also within a pass, checked when the predictions
  the steps make anyway say it may have (:mod:`~monai_robust.attacks.uap_stopping`); ``amp=True`` runs the gradient
  steps under bf16/fp16 autocast; 2D networks on a CPU run channels-last (:mod:`~monai_robust.attacks.layout`).
* A fit returns a :class:`~monai_robust.attacks.fixed_perturbation.UAPResult` (δ and how it was fitted, saved as
  ``.pt`` with a PNG/NIfTI view); :func:`~monai_robust.attacks.fixed_perturbation.evaluate_uap` measures it and
  :func:`~monai_robust.attacks.fixed_perturbation.noise_control` draws its random control.

Fitting images come from any source :func:`monai_robust.data.batches.iter_image_batches` reads, natural images from
:mod:`monai_robust.data.natural_images`; retraining against UAPs is :mod:`monai_robust.engines.uap_retraining`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from monai_robust.attacks.base import LossFn, default_loss
from monai_robust.attacks.deepfool import DeepFool
from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.fixed_perturbation import broadcast_delta
from monai_robust.attacks.functional import lp_normalize, lp_project
from monai_robust.attacks.threat import ThreatModel, _check_positive, _check_positive_int
from monai_robust.attacks.universal_base import UniversalPerturbation
from monai_robust.metrics.robustness import to_class_predictions

__all__ = [
    "SGDUAP",
    "IterativeUAP",
    "UniversalPerturbation",
]


class _InnerFGSM(FGSM):
    """IterativeUAP's FGSM step: with ``amp``, the low-precision step as it is (IterativeUAP decides in fp32 whether
    it succeeded, and a failed step only leaves δ unchanged), without FGSM's fp32 check and refinement."""

    exact_amp = False


class IterativeUAP(UniversalPerturbation):
    """The iterative UAP of Moosavi-Dezfooli et al., with an FGSM or DeepFool inner attack, targeted or not.

    Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR 2017,
    https://arxiv.org/abs/1610.08401; on medical images: Hirano, Minagi & Takemoto, "Universal adversarial attacks
    on deep neural networks for medical image classification", BMC Med Imaging 2021,
    https://doi.org/10.1186/s12880-020-00530-y; targeted: Hirano & Takemoto, "Simple iterative method for
    generating targeted universal adversarial perturbations", Algorithms 2020, https://doi.org/10.3390/a13110268

    Per-image algorithm (as in those papers and ART): for each fitting image ``x_i``, in random order, if
    ``x_i + δ`` is not yet fooled (prediction still equals the clean prediction; targeted: not yet ``target``), the
    inner attack at ``x_i + δ`` gives an extra perturbation ``r_i``; when ``x_i + δ + r_i`` is fooled (targeted:
    classified as ``target``), ``δ <- P(δ + r_i)``, the projection onto the ``eps`` ball.

    **Minibatched** (this class): the images of a minibatch are checked with the same δ, the inner attack runs
    once on all those not yet fooled, and the successful ``r_i`` are *summed* into one update
    ``δ <- P(δ + Σ_i r_i)``. The exact deviation from the per-image loop: within a minibatch each ``r_i`` is
    computed at the δ of the start of the minibatch (not after the previous image's update), and the projection
    is applied once per minibatch instead of after each image. With ``batch_size=1`` and a tensor source this is
    the per-image loop exactly. Two smaller differences from ART: "fooled" compares with the clean *prediction*
    (ART uses the labels when given), and ``r_i = inner(clip(x_i + δ)) - clip(x_i + δ)`` is added to δ (ART sets
    ``δ = inner(x_i + δ) - x_i``; the two differ only where ``x_i + δ`` leaves ``bounds``).

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: absolute budget, or a :class:`ThreatModel`; or use ``zeta``.
        inner: ``"fgsm"`` (default; FGM for L2) or ``"deepfool"`` (non-targeted only).
        step_size: the inner FGSM step, in model-input units (> 0); default ``eps / 10``. A full-budget step
            (``eps``) makes δ oscillate between passes; on PneumoniaMNIST ``eps / 10`` gave the higher rates.
        inner_steps: DeepFool's maximum iterations (>= 1).
        overshoot: DeepFool's overshoot (>= 0).
        amp: the FGSM inner step under autocast (see :class:`UniversalPerturbation`; whether it succeeded is
            decided in fp32); DeepFool runs in fp32.
        kwargs: ``zeta``, ``lp``, ``bounds``, ``target``, ``max_passes``, ``target_rate``, ``batch_size``,
            ``progress``, ``summary_writer``, ``tag``, ``amp``, ``check_window``, ``channels_last`` as in
            :class:`UniversalPerturbation`.

    Raises:
        ValueError: When ``inner`` is unknown, ``inner="deepfool"`` with a ``target``, or a number is out of range.

    Example::

        >>> fitter = IterativeUAP(net, zeta=0.04, lp=2, bounds=(0.0, 1.0), inner="fgsm", max_passes=5)
        >>> result = fitter.set_random_state(0).fit(train_loader)
        >>> result.rate  # fooling rate on the fitting images after the last pass
    """

    _repr_keys = ("inner", "step_size", "inner_steps", "overshoot")

    def __init__(
        self,
        network: nn.Module,
        eps: float | ThreatModel | None = None,
        *,
        inner: str = "fgsm",
        step_size: float | None = None,
        inner_steps: int = 10,
        overshoot: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, **kwargs)
        if inner not in ("fgsm", "deepfool"):
            raise ValueError(f"inner must be 'fgsm' or 'deepfool', got inner={inner!r}.")
        if inner == "deepfool" and self.target is not None:
            raise ValueError(f"DeepFool is untargeted: a targeted UAP (target={self.target}) needs inner='fgsm'.")
        self.inner = inner
        self.step_size = None if step_size is None else _check_positive("step_size", step_size)
        self.inner_steps = _check_positive_int("inner_steps", inner_steps)
        self.overshoot = _check_positive("overshoot", overshoot, allow_zero=True)

    def _start_fit(self, eps: float, passes_done: int) -> None:
        if self.inner == "deepfool":
            self._attack = DeepFool(
                self.network, lp=self.lp, bounds=self.bounds, num_steps=self.inner_steps,
                overshoot=self.overshoot,
            )
        else:
            step = eps / 10.0 if self.step_size is None else self.step_size
            self._attack = _InnerFGSM(self.network, step, lp=self.lp, bounds=self.bounds,
                                      targeted=self.target is not None, amp=self._precision is not None)

    def fit_pass(self, source: Any, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for x, clean in self.batches(source, generator):
            d = broadcast_delta(delta, tuple(x.shape))
            done = self.success(self.predict(self.perturbed(x, d)), clean)
            if self.observe(source, delta, done):
                return delta
            todo = ~done
            if not bool(todo.any()):
                continue
            clean_t = None if clean is None else clean[todo]
            x_t = self.perturbed(x[todo], d)
            adv = self._attack(x_t, self.attack_labels(clean_t, x_t.shape[0]))
            ok = self.success(self.predict(adv), clean_t)
            if bool(ok.any()):  # the successful inner perturbations of the minibatch, summed, then one projection
                delta = lp_project(d + (adv - x_t)[ok].sum(0, keepdim=True), self._eps, self.lp)
        return delta


class SGDUAP(UniversalPerturbation):
    """Universal perturbation by projected stochastic gradient ascent on δ with a clamped loss, targeted or not.

    Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial training", AAAI 2020,
    https://arxiv.org/abs/1812.03705 (Algorithm 1, the clamped loss of Eq. 5).

    For every minibatch ``B``: ``g = ∇_δ mean_{x∈B} min(J(clip(x + δ)), beta)`` with ``J`` the loss away from the
    clean prediction (non-targeted) or minus the loss to ``target`` (targeted); then
    ``δ <- P(δ + step_size · s(g))`` with ``s`` the steepest-ascent direction of unit Lp norm (``sign`` for L-inf,
    ``g / ||g||_2`` for L2) and ``P`` the projection onto the ``eps`` ball. The clamp at ``beta`` stops inputs that
    are already fooled from dominating the gradient. The step decays by ``step_decay`` after each pass. Runs on
    the model's device (a GPU when the model is on one); no per-sample loop.

    The defaults (step ``eps / 6`` decaying by 0.8 per pass, minibatches of 16) were chosen on PneumoniaMNIST
    (ζ = 4 % L2, 1000 fitting images): one pass reaches a fooling rate of 0.531 on the fitting images, where
    ``eps / 10`` constant with minibatches of 32 reached 0.490 (0.532 after five passes).

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: absolute budget, or a :class:`ThreatModel`; or use ``zeta``.
        step_size: the step in model-input units (> 0); default ``eps / 6``.
        step_decay: factor (0, 1] applied to the step after each pass; default 0.8.
        beta: clamp on the per-sample objective; default ``-log(0.1) ≈ 2.3`` non-targeted (an input stops
            counting once its clean class has probability <= 0.1) and ``log(0.9) ≈ -0.105`` targeted (once the
            target has probability >= 0.9); ``math.inf`` turns the clamp off.
        loss: ``loss(logits, labels) -> (N,)``; default cross-entropy
            (:func:`~monai_robust.attacks.base.default_loss`). The ``beta`` defaults assume cross-entropy.
        kwargs: ``zeta``, ``lp``, ``bounds``, ``target``, ``max_passes``, ``target_rate``, ``batch_size``,
            ``progress``, ``summary_writer``, ``tag``, ``amp``, ``check_window``, ``channels_last`` as in
            :class:`UniversalPerturbation` (``batch_size``
            defaults to 16 here).

    Raises:
        ValueError: When a number is out of range or ``loss`` is not callable.

    Example::

        >>> fitter = SGDUAP(net.cuda(), zeta=0.04, lp=2, bounds=(0.0, 1.0), max_passes=20)
        >>> result = fitter.set_random_state(0).fit(monai.data.DataLoader(ds, batch_size=64, shuffle=True))
    """

    _repr_keys = ("step_size", "step_decay", "beta")

    def __init__(
        self,
        network: nn.Module,
        eps: float | ThreatModel | None = None,
        *,
        step_size: float | None = None,
        step_decay: float = 0.8,
        beta: float | None = None,
        loss: LossFn | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("batch_size", 16)
        super().__init__(network, eps, **kwargs)
        self.step_size = None if step_size is None else _check_positive("step_size", step_size)
        self.step_decay = _check_positive("step_decay", step_decay)
        if self.step_decay > 1:
            raise ValueError(f"step_decay must lie in (0, 1], got step_decay={step_decay!r}.")
        if beta is not None and not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta == beta):
            raise ValueError(f"beta must be a number (math.inf for no clamp) or None, got beta={beta!r}.")
        if beta is None:
            beta = -math.log(0.1) if self.target is None else math.log(0.9)
        self.beta = float(beta)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be callable(logits, labels), got {loss!r}.")
        self.loss = loss or default_loss

    def _start_fit(self, eps: float, passes_done: int) -> None:
        base = (eps / 6.0) if self.step_size is None else self.step_size
        self._step = base * self.step_decay**passes_done  # a resumed fit continues the schedule

    def fit_pass(self, source: Any, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sign = 1.0 if self.target is None else -1.0
        for x, clean in self.batches(source, generator):
            d = broadcast_delta(delta, tuple(x.shape)).detach().requires_grad_(True)
            labels = self.attack_labels(clean, x.shape[0])
            with self.mixed():
                logits = self.logits(self.perturbed(x, d))
            if self.observe(source, delta, self.success(to_class_predictions(logits.detach()), clean)):
                return delta
            loss = self.loss(logits, labels)
            objective = (sign * loss.expand(x.shape[0]) if loss.ndim == 0 else sign * loss).clamp(max=self.beta)
            (grad,) = torch.autograd.grad(objective.mean(), d)
            delta = lp_project(d.detach() + self._step * lp_normalize(grad, self.lp), self._eps, self.lp)
        self._step *= self.step_decay
        return delta
