# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""SMIA, the stabilized medical image attack: the projected-gradient loop of :class:`PGD` ascending the loss
deviation minus a KL stabilization term between the predictions on ``x + δ`` and on a Gaussian-smoothed copy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d
from monai.utils import convert_to_tensor

from monai_robust.attacks.base import attack_mode
from monai_robust.attacks.pgd import PGD
from monai_robust.attacks.threat import _check_positive

__all__ = ["SMIA", "prediction_kl"]


def prediction_kl(logits: torch.Tensor, reference_logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Per-sample ``KL(p_ref || p)`` between the predictions of two forward passes, ``(N,)``.

    Softmax distributions for multi-class heads; for a single-logit head or a multi-label head
    (``multi_label=True``) the Bernoulli KL of each sigmoid output, averaged over outputs.

    Args:
        logits: ``(N, classes)`` logits whose distribution ``p`` is compared with the reference.
        reference_logits: ``(N, classes)`` logits of the reference distribution ``p_ref``.
        multi_label: treat each output as an independent binary label (implied by a single logit).

    Returns:
        ``(N,)`` non-negative KL divergences, in nats.

    Example::

        >>> a = torch.tensor([[2.0, 0.0]])
        >>> float(prediction_kl(a, a))
        0.0
    """
    if multi_label or logits.shape[1] == 1:
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)  # log p(1), log p(0)
        log_pr, log_qr = F.logsigmoid(reference_logits), F.logsigmoid(-reference_logits)
        kl = log_pr.exp() * (log_pr - log_p) + log_qr.exp() * (log_qr - log_q)
        return kl.mean(dim=1)
    log_p, log_ref = F.log_softmax(logits, dim=1), F.log_softmax(reference_logits, dim=1)
    return (log_ref.exp() * (log_ref - log_p)).sum(dim=1)


class SMIA(PGD):
    r"""Stabilized medical image attack: each signed-gradient step increases the loss deviation while keeping
    the model's prediction on the adversarial image close to its prediction on a Gaussian-smoothed copy of it.

    Qi, Gong, Song, Ma & Zheng, "Stabilized Medical Image Attacks", ICLR 2021, https://arxiv.org/abs/2103.05232

    Objective ascended at each step (per sample; ``s = +1`` untargeted, ``s = -1`` targeted towards ``y``)::

        J(δ) = s · L(f(x + δ), y)  -  β · KL( softmax f(G_σ ∗ (x + δ))  ||  softmax f(x + δ) )
        δ ← Π_ε( δ + α · sign(∇_δ J(δ)) ),  then x + δ clipped to ``bounds``     (L2: ∇/||∇||_2)

    * ``L`` is the injected loss (cross-entropy on logits by default): the *loss deviation* term.
    * The *stabilization* term is the KL divergence from the prediction on the smoothed adversarial image
      (the reference distribution, as the clean prediction is in TRADES) to the prediction on the adversarial
      image. For a single-logit or multi-label head (labels shaped like the logits) it is the Bernoulli KL of
      each sigmoid output, averaged over outputs (:func:`prediction_kl`).
    * ``smoothing="perturbation"`` smooths only the perturbation instead: the reference is
      ``f(x + G_σ ∗ δ)``, so the term is zero at ``δ = 0`` and measures how much the prediction relies on the
      high-frequency part of δ (the other reading of the paper's "smoothed input").
    * ``G_σ ∗`` is a symmetric Gaussian blur over every spatial dimension (2D or 3D), built with MONAI's
      :class:`~monai.networks.layers.GaussianFilter`'s kernel, with weights renormalised at the borders
      (``(G ∗ z) / (G ∗ 1)``) so that the smoothed copy keeps the intensity level everywhere.
    * Gradients flow through *both* branches (``∇_δ`` is the total derivative, the smoothed copy being a
      function of δ); ``detach_smoothed=True`` instead treats the smoothed prediction as a constant target
      at each step.
    * ``β = 0`` is exactly :class:`PGD` with the same settings (with ``random_start=False``, the default,
      that is :class:`BIM`); the ``β = 0`` branch skips the smoothed forward pass.

    What the paper fixes, and what we could not check. Only the abstract and the OpenReview page of the paper
    (https://openreview.net/forum?id=QfTXQiGYudJ) were reachable when this was written, not its full text, so no
    equation numbers are quoted here as verified. The abstract fixes: an objective made of a *loss deviation*
    term, which increases the divergence between the prediction on the adversarial example and the ground truth,
    and a *loss stabilization* term, which keeps the predictions on the example and on its *smoothed* input
    similar; the authors analyse the objective through the KL divergence, and generate the perturbation
    iteratively. Unverified here, hence stated as our choices: the form ``deviation - β · stabilization`` with a
    KL stabilization term in the direction above, the sign-gradient step of BIM/PGD with projection onto the
    ``eps`` ball, whether the smoothed input is ``G ∗ (x + δ)`` or ``x + G ∗ δ``, whether its prediction is a
    constant target, and every default (β = 1, σ = 1 px, a 4σ kernel, step ``1.25 eps / num_steps``, 10 steps, no
    random start). One public third-party implementation (for segmentation) smooths the signed-gradient step
    rather than the image, uses cross-entropy against the *detached* prediction on that smoothed step as the
    stabilization term, and steps by ``eps`` per iteration without projection; of our options,
    ``smoothing="perturbation"`` with ``detach_smoothed=True`` is the closest. The authors' public code
    (github.com/imogenqi/SMA, ``SMIA.py``, read 2026-12-06) does not run as published (it uses names it never
    defines); as far as it can be read, it ascends ``a1 · CE(f(x'), y) - a2 · CE(f(x'), argmax f(x' + ε · G ∗
    sign ∇))`` with defaults ``a1 = 1, a2 = 0`` (so plain iterative FGSM with step ε per iteration, no projection
    and no clipping), a 3-tap Gaussian over a dilated kernel: again closest to ``smoothing="perturbation"``,
    ``detach_smoothed=True``. Compare SMIA with BIM/PGD at the same ``step_size``, ``num_steps`` and start
    (``bench/smia.py`` does), not at their differing defaults: measured there (PneumoniaMNIST, 3 seeds, n = 624
    each, ε 1, 2, 4 / 255), β = 1 was *weaker* than BIM/PGD in all 18 pairs, by 0.006-0.019 at 1/255 and 0.12-0.17
    at 4/255, with smoother perturbations (total variation 1.27-1.58 vs 1.71-1.93 ε per pixel); the paper's
    claim that it is stronger than PGD did not reproduce at equal settings.

    Cost: each step is one forward and backward pass of a ``2N`` batch (``N`` when ``β = 0``) plus the blur and its
    backward, about 2x a PGD step. The blur is a product with a banded matrix per spatial axis (see
    :meth:`smooth`); with MONAI's 1-channel separable convolutions it cost as much as a small 3D network, which
    made a 3D SMIA step ~2.5-3.3x a PGD step (process CPU time, small 3D CNNs on 4 volumes of 32^3 and 48^3;
    ~1.95-2.3x after the change; every step does exactly one forward pass of 2N samples, counted with a hook).

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call).
        beta: weight of the stabilization term (>= 0, dimensionless; loss and KL are both in nats).
        sigma: standard deviation of the Gaussian kernel, in pixels/voxels (> 0).
        kernel_size: odd kernel width in pixels (>= 3); default ``2 * round(4 * sigma) + 1`` (MONAI's
            truncation at 4 sigma).
        detach_smoothed: stop the gradient through the smoothed branch.
        smoothing: ``"image"`` (smooth ``x + δ``, default) or ``"perturbation"`` (smooth ``δ`` only).
        step_size: step in model-input units; default ``rel_step_size = 1.25 / num_steps`` times the call's eps
            (as :class:`BIM`).
        num_steps: iterations (>= 1).
        num_restarts: independent runs (>= 1; only useful with ``random_start``).
        random_start: start from a uniform random point of the ball (default ``False``).
        kwargs: ``lp``, ``bounds``, ``loss``, ``targeted``, ``early_stop``, ``amp`` as in
            :class:`~monai_robust.attacks.base.Attack`.

    Raises:
        ValueError: When ``beta < 0``, ``sigma <= 0``, ``kernel_size`` is not an odd integer >= 3,
            ``smoothing`` is not ``"image"`` or ``"perturbation"``, or a
            :class:`PGD` argument is invalid (the message quotes the value).

    Example::

        >>> attack = SMIA(net, eps=2 / 255, beta=1.0, sigma=1.0, num_steps=10, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
    """

    exact_amp = amp_by_default = False  # its objective and success are not PGD's: fp32 unless amp=True (then plain autocast)
    _repr_keys = (
        "step_size", "rel_step_size", "num_steps", "num_restarts", "random_start", "beta", "sigma", "kernel_size",
        "smoothing",
    )
    _default_rel_step = 1.25

    def __init__(
        self,
        network: torch.nn.Module,
        eps: Any = None,
        *,
        beta: float = 1.0,
        sigma: float = 1.0,
        kernel_size: int | None = None,
        detach_smoothed: bool = False,
        smoothing: str = "image",
        step_size: float | None = None,
        rel_step_size: float | None = None,
        num_steps: int = 10,
        num_restarts: int = 1,
        random_start: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            network,
            eps,
            step_size=step_size,
            rel_step_size=rel_step_size,
            num_steps=num_steps,
            num_restarts=num_restarts,
            random_start=random_start,
            **kwargs,
        )
        self.beta = _check_positive("beta", beta, allow_zero=True)
        self.sigma = _check_positive("sigma", sigma)
        if kernel_size is None:
            kernel_size = 2 * int(max(4.0 * self.sigma, 0.5) + 0.5) + 1
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 3, got kernel_size={kernel_size!r}.")
        self.kernel_size = kernel_size
        self.detach_smoothed = bool(detach_smoothed)
        if smoothing not in ("image", "perturbation"):
            raise ValueError(f"smoothing must be 'image' or 'perturbation', got smoothing={smoothing!r}.")
        self.smoothing = smoothing
        self._clean: torch.Tensor | None = None
        self._bands: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ the stabilization term
    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian-smoothed copy ``(G ∗ x) / (G ∗ 1)`` of ``x`` ``(N, C, *spatial)``, differentiable in ``x``.

        The separable blur runs as one matrix product per spatial axis with a banded ``(L, L)`` matrix holding
        MONAI's Gaussian kernel (:func:`~monai.networks.layers.convutils.gaussian_1d`, as in
        :class:`~monai.networks.layers.GaussianFilter` with zero padding), its columns normalised to sum 1: the
        border renormalisation of a separable filter. Same values as ``GaussianFilter`` (to float precision), but
        7-30x less CPU time than its 1-channel convolutions (measured forward+backward on 8x48^3, 2x128^3 and
        4x512^2 inputs), which made SMIA cost up to ~3.3x PGD per step in 3D instead of ~2x.

        Example::

            >>> SMIA(net, 0.01, sigma=1.0).smooth(torch.ones(1, 1, 8, 8)).allclose(torch.ones(1, 1, 8, 8))
            True
        """
        out = x
        for axis in range(2, x.ndim):
            out = (out.movedim(axis, -1) @ self._band(x.shape[axis], x)).movedim(-1, axis)
        return out

    def _band(self, length: int, like: torch.Tensor) -> torch.Tensor:
        key = (length, like.device, like.dtype)
        if key not in self._bands:
            truncated = (self.kernel_size // 2) / self.sigma  # MONAI: tail = round(sigma * truncated)
            kernel = gaussian_1d(torch.tensor(self.sigma), truncated=truncated).to(like.device, like.dtype)
            radius = kernel.numel() // 2
            offset = torch.arange(length, device=like.device)
            offset = offset[:, None] - offset[None, :]
            inside = offset.abs() <= radius
            band = kernel[(offset + radius).clamp(0, kernel.numel() - 1)] * inside
            self._bands[key] = band / band.sum(dim=0, keepdim=True)
        return self._bands[key]

    def reference(self, x: torch.Tensor, clean: torch.Tensor | None = None) -> torch.Tensor:
        """The smoothed input whose prediction is the KL reference: ``G ∗ x`` (``smoothing="image"``) or
        ``clean + G ∗ (x - clean)`` (``smoothing="perturbation"``, which needs ``clean``).

        Raises:
            ValueError: When ``smoothing="perturbation"`` and ``clean`` is missing or of another shape.
        """
        if self.smoothing == "image":
            return self.smooth(x)
        if clean is None or clean.shape != x.shape:
            shape = None if clean is None else tuple(clean.shape)
            raise ValueError(f"smoothing='perturbation' needs the clean images of shape {tuple(x.shape)}, got {shape}.")
        return clean + self.smooth(x - clean)

    def stabilization(self, images: Any, clean: Any = None) -> torch.Tensor:
        """The stabilization term ``KL(p(reference) || p(images))`` per sample, without gradients.

        Used to compare attacks: lower means the prediction is stable under the smoothing.

        Args:
            images: ``(N, C, *spatial)`` Tensor, MetaTensor or ndarray in model-input units.
            clean: the clean images, needed with ``smoothing="perturbation"``.

        Returns:
            ``(N,)`` float tensor on the model's device, in nats (a single logit gives the Bernoulli KL).

        Raises:
            ValueError: When ``smoothing="perturbation"`` and ``clean`` is missing or of another shape.

        Example::

            >>> kl_smia = attack.stabilization(attack(images, labels)).mean()
        """
        param = next(self.network.parameters(), None)
        device = None if param is None else param.device
        x = convert_to_tensor(images, track_meta=False, dtype=torch.float32, device=device)
        c = None if clean is None else convert_to_tensor(clean, track_meta=False, dtype=torch.float32, device=device)
        with attack_mode(self.network, self.amp), torch.no_grad():
            both = self.network(torch.cat([x, self.reference(x, c)])).float()
        logits, ref = both.split(x.shape[0])
        return prediction_kl(logits, ref, multi_label=logits.shape[1] == 1)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        self._clean = images
        try:
            return super().perturb(images, labels, eps)
        finally:
            self._clean = None

    def objective(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s · L(f(x), y) - β · KL(p(reference) || p(x))`` per sample (see the class docstring), and ``f(x)``."""
        if self.beta == 0:
            return super().objective(x, labels)
        n, first = x.shape[0], not self._checked
        ref_input = self.reference(x.detach() if self.detach_smoothed else x, self._clean)
        both = self.logits(torch.cat([x, ref_input]))  # one forward of 2N: same work as two, fewer launches
        logits, ref = both[:n], both[n:]
        if first:
            self._validate_labels_for(logits, labels)
        if self.detach_smoothed:
            ref = ref.detach()
        loss = self.loss(logits, labels)
        if loss.ndim == 0:
            loss = loss.expand(n)
        multi_label = logits.shape[1] == 1 or labels.shape == logits.shape
        stab = prediction_kl(logits, ref, multi_label=multi_label)
        score = (-loss if self.targeted else loss) - self.beta * stab
        return score, logits

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", detach_smoothed={self.detach_smoothed})"
