# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DeepFool: step to the nearest linearised decision boundary until the label flips, all samples at once."""

from __future__ import annotations

from typing import Any

import torch

from monai_robust.attacks.base import MinimizationAttack, check_finite
from monai_robust.attacks.functional import batch_view, clip_to_bounds, lp_norm
from monai_robust.attacks.threat import _check_positive, _check_positive_int
from monai_robust.utils.enums import LpNorm

__all__ = ["DeepFool"]

_TINY = 1e-12


class DeepFool(MinimizationAttack):
    """DeepFool, multi-class, L2 or L-inf: a minimal perturbation found by linearising the classifier.

    Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural networks",
    CVPR 2016, https://arxiv.org/abs/1511.04599

    At each iteration, for the label ``y`` and every other candidate class ``k`` (the ``num_candidates`` classes
    with the highest clean logits), with ``f_k = Z_k - Z_y`` and ``w_k = grad f_k``, the distance to the linearised
    boundary is ``|f_k| / ||w_k||_q`` (``q`` the dual norm: 2 for L2, 1 for L-inf). The step ``r_i`` reaches the
    nearest one: ``r_i = d * w / ||w||_2`` (L2) or ``d * sign(w)`` (L-inf), with ``d`` raised by ``1e-4`` of the box
    width when ``overshoot=0`` so that the iterate crosses the boundary (the authors' code always adds it). The
    total ``r`` is accumulated and the iterate is ``x' = clip(x + (1 + overshoot) * r)`` (and ``r`` is kept equal to
    the clipped step). With ``bounds``, gradient coordinates that would push a pixel already on a face of the box
    outward are zeroed first, so the step reaches the linearised boundary inside the box instead of creeping
    towards it. A sample is frozen once its label flips. The Jacobian rows are taken batched, one backward
    per candidate class for the whole batch, and only the samples not yet flipped are forwarded.

    Untargeted by nature. A :class:`~monai_robust.attacks.base.MinimizationAttack` as
    :class:`~monai_robust.attacks.cw.CW`: no budget; samples already misclassified are returned as they are, samples
    not flipped within ``num_steps`` are returned **unchanged**, so ``is_adversarial(net(adv), labels)`` is the
    per-sample success. After a call, ``last_progress[k]`` is the fraction of samples flipped after iteration ``k``.

    A single-logit (binary) head is attacked as the two logits ``[0, f]``; multi-label heads are not supported.

    Args:
        network: classifier returning logits ``(N, classes)`` (``classes = 1`` for a binary head).
        lp: ``2`` (default) or ``"inf"``.
        num_steps: maximum iterations (>= 1).
        overshoot: relative overshoot (>= 0) that carries the iterate across the boundary.
        num_candidates: classes considered, the label included (>= 2; capped at the number of classes).
        kwargs: ``bounds`` (the iterate is clipped to them), ``amp`` as in
            :class:`~monai_robust.attacks.base.Attack`. ``early_stop`` is accepted and changes nothing: DeepFool
            always freezes samples whose label has flipped.

    Raises:
        ValueError: When ``targeted=True``, ``lp`` is 1, a ``loss`` is given (DeepFool works on logits), or a number
            is out of range (the message quotes it); on a call, for multi-label heads.

    Example::

        >>> attack = DeepFool(net, num_steps=50, overshoot=0.02, bounds=(0.0, 1.0))
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
    """

    _repr_keys = ("num_steps", "overshoot", "num_candidates")

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        lp: str | float = 2,
        num_steps: int = 50,
        overshoot: float = 0.02,
        num_candidates: int = 10,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("targeted"):
            raise ValueError(f"DeepFool is untargeted, got targeted={kwargs['targeted']!r}.")
        if kwargs.get("loss") is not None:
            raise ValueError(f"DeepFool works on the logits; it takes no loss, got {kwargs['loss']!r}.")
        super().__init__(network, lp=lp, **kwargs)
        if self.lp == LpNorm.L1:
            raise ValueError(f"DeepFool supports lp=2 and lp='inf', got lp={lp!r}.")
        self.num_steps = _check_positive_int("num_steps", num_steps)
        self.overshoot = _check_positive("overshoot", overshoot, allow_zero=True)
        self.num_candidates = _check_positive_int("num_candidates", num_candidates)
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (the label and one other class), got {num_candidates!r}.")

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits, y = self.class_logits(images, labels)
        k = min(self.num_candidates, logits.shape[1])
        others = logits.scatter(1, y[:, None], -torch.inf).topk(k - 1, dim=1).indices
        candidates = torch.cat([y[:, None], others], dim=1)  # (N, k): the label first
        active = logits.argmax(dim=1) == y  # samples still to flip; misclassified ones stay as they are
        adv, r_tot = images.clone(), torch.zeros_like(images)
        # the authors' code adds 1e-4 to each step so the iterate crosses the boundary; overshoot > 0 does that
        margin = 0.0 if self.overshoot > 0 else 1e-4 * (1.0 if self.bounds is None else self.bounds[1] - self.bounds[0])
        scale = 1.0 + self.overshoot

        for step in range(self.num_steps + 1):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_a = adv[idx].requires_grad_(step < self.num_steps)
            logits_a, _ = self.class_logits(x_a, labels[idx])
            flipped = logits_a.argmax(dim=1) != y[idx]
            active[idx[flipped]] = False
            if step > 0:
                self.last_progress.append(1.0 - float(active.float().mean()))
            if step == self.num_steps or bool(flipped.all()):
                break
            z = logits_a.gather(1, candidates[idx])
            f = (z[:, 1:] - z[:, :1]).detach()  # (n, k - 1), < 0 while the label wins
            w = self._jacobian(z, x_a)  # (n, k - 1, *spatial)
            if self.bounds is not None:  # coordinates on a face of the box that w pushes outward cannot move
                at = x_a.detach().unsqueeze(1)
                w = w.masked_fill(((at <= self.bounds[0]) & (w < 0)) | ((at >= self.bounds[1]) & (w > 0)), 0.0)
            dual = w.flatten(2).norm(p=1 if self.lp == LpNorm.LINF else 2, dim=2)
            dist = f.abs() / dual.clamp_min(_TINY)
            nearest = dist.argmin(dim=1)
            rows = torch.arange(idx.numel(), device=idx.device)
            w_l, d_l = w[rows, nearest], dist[rows, nearest] + margin
            if self.lp == LpNorm.LINF:
                r_i = batch_view(d_l, w_l) * w_l.sign()
            else:
                r_i = batch_view(d_l / lp_norm(w_l, 2).clamp_min(_TINY), w_l) * w_l
            keep = batch_view(~flipped, r_i).bool()  # just-flipped samples stay where they are
            x0 = images[idx]
            new = clip_to_bounds(x0 + scale * (r_tot[idx] + r_i), self.bounds)
            adv[idx] = torch.where(keep, new, adv[idx])
            r_tot[idx] = torch.where(keep, (new - x0) / scale, r_tot[idx])

        # success as the caller will see it: one forward of the whole batch (a flip by a last-bit margin in a
        # sub-batch forward may not survive it); failures come back unchanged
        with torch.no_grad():
            logits, _ = self.class_logits(adv, labels)
        keep = logits.argmax(dim=1) != y
        return torch.where(batch_view(keep, images).bool(), adv, images)

    @staticmethod
    def _jacobian(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gradients of ``z[:, j] - z[:, 0]`` w.r.t. ``x``, one batched backward per candidate ``j``."""
        k = z.shape[1]
        grads = [
            torch.autograd.grad((z[:, j] - z[:, 0]).sum(), x, retain_graph=j < k - 1)[0] for j in range(1, k)
        ]
        out = torch.stack(grads, dim=1)
        check_finite(out, "input gradients", "DeepFool")
        return out
