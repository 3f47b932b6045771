# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""FAB-T, the targeted fast adaptive boundary attack (L-inf, L2) as AutoAttack runs it: find a minimally distorted
adversarial, keep it when it lies within ``eps``; and the box-constrained projections onto a hyperplane it needs."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from monai_robust.attacks.base import BoundedAttack, is_adversarial
from monai_robust.attacks.functional import batch_view, clip_to_bounds, lp_norm
from monai_robust.attacks.targets import attack_over_targets
from monai_robust.attacks.threat import _check_positive, _check_positive_int
from monai_robust.utils.enums import LpNorm

__all__ = ["FAB", "project_hyperplane"]

_BIG = 1e12


def _bisect(lb: torch.Tensor, ub: torch.Tensor, steps: int, above: Any) -> torch.Tensor:
    """Integer bisection shared by both projections: ``above(mid)`` says whether the solution lies above ``mid``."""
    for _ in range(steps):
        mid = torch.floor((lb + ub) / 2)
        go_up = above(mid.long().unsqueeze(1))
        lb, ub = torch.where(go_up, mid, lb), torch.where(go_up, ub, mid)
    return lb.long()


def _project_linf_unit(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest L-inf step ``d`` with ``w·(t + d) = b`` and ``t + d`` in ``[0, 1]``, per row (authors' algorithm)."""
    sign = 2 * ((w * t).sum(1) - b >= 0).to(w.dtype) - 1
    w, b = w * sign[:, None], b * sign
    a = (w < 0).to(w.dtype)
    d = (a - t) * (w != 0)
    p = a - t * (2 * a - 1)
    indp = p.argsort(dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp.flip((1,))
    ws = w.gather(1, indp2)
    s = ws.abs().cumsum(1)
    sb = (-ws * d.gather(1, indp2)).cumsum(1) + b0[:, None]
    c_l = b - (sb[:, -1] - s[:, -1] * p.gather(1, indp[:, :1]).squeeze(1)) > 0
    c2 = (b - b0 > 0) & ~c_l
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]

    def above(mid: torch.Tensor) -> torch.Tensor:
        cur = indp_.gather(1, indp_.shape[1] - 1 - mid)
        return b_ - (sb_.gather(1, mid) - s_.gather(1, mid) * p_.gather(1, cur)).squeeze(1) > 0

    lb = torch.zeros(int(c2.sum()), device=t.device)
    lb = _bisect(lb, torch.full_like(lb, w.shape[1] - 1), math.ceil(math.log2(w.shape[1])), above)
    if bool(c_l.any()):
        lmbd = ((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1])).clamp_min(0).unsqueeze(1)
        d[c_l] = (2 * a[c_l] - 1) * lmbd
    lmbd = ((b[c2] - sb[c2, lb]) / (-s[c2, lb])).clamp_min(0).unsqueeze(1)
    d[c2] = torch.minimum(lmbd, d[c2]) * a[c2] + torch.maximum(-lmbd, d[c2]) * (1 - a[c2])
    return d * (w != 0)


def _project_l2_unit(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest L2 step ``d`` with ``w·(t + d) = b`` and ``t + d`` in ``[0, 1]``, per row (authors' algorithm)."""
    c = (w * t).sum(1) - b
    sign = 2 * (c >= 0).to(w.dtype) - 1
    w, c = w * sign[:, None], c * sign
    small = w.abs() < 1e-8
    r = torch.maximum(t / w, (t - 1) / w).clamp(-_BIG, _BIG).masked_fill(small, _BIG)
    r = torch.where(r == -_BIG, -r, r)
    rs, indr = r.sort(dim=1)
    rs2 = F.pad(rs[:, 1:], (0, 1)).masked_fill(F.pad(rs[:, 1:], (0, 1)) == _BIG, 0)
    rs = rs.masked_fill(rs == _BIG, 0)
    w3s = (w**2).gather(1, indr)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - w3s.cumsum(1)
    d = -(r * w) * ~small
    s = torch.cat((-w5 * rs[:, :1], ((rs - rs2) * ws).cumsum(1) - w5 * rs[:, :1]), 1)
    c4 = s[:, 0] + c < 0
    c2 = ~(c4 | ((d * w).sum(1) + c > 0))
    s_, c_ = s[c2], c[c2]
    lb = torch.zeros(int(c2.sum()), device=t.device)
    lb = _bisect(lb, torch.full_like(lb, w.shape[1] - 1), math.ceil(math.log2(w.shape[1])),
                 lambda mid: s_.gather(1, mid).squeeze(1) + c_ > 0)
    if bool(c4.any()):
        d[c4] = -(c[c4] / w5[c4].squeeze(1)).unsqueeze(1) * w[c4]
    if bool(c2.any()):
        alpha = (s[c2, lb] + c[c2]) / ws[c2, lb] + rs[c2, lb]
        alpha = torch.where(ws[c2, lb] == 0, torch.zeros_like(alpha), alpha).unsqueeze(1)
        keep = (alpha > r[c2]).to(w.dtype)
        d[c2] = d[c2] * keep - alpha * w[c2] * (1 - keep)
    return d * ~small


def project_hyperplane(
    points: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lp: LpNorm, bounds: tuple[float, float] | None
) -> torch.Tensor:
    """The smallest Lp step from each point onto its hyperplane ``w·x = b`` that stays inside ``bounds``.

    The box-constrained L-inf and L2 projections of Croce & Hein (FAB, ICML 2020), ported from the authors' code (https://github.com/fra31/auto-attack,
    ``fab_projections.py``) and written for ``[0, 1]``; another box ``[lo, hi]`` is mapped onto it (``x = lo + s·u``
    scales every coordinate by the same ``s``, so the minimal step maps to the minimal step). Without a box, the
    closed forms ``-(w·x - b) w / ||w||_2^2`` (L2) and ``-(w·x - b) sign(w) / ||w||_1`` (L-inf).

    Args:
        points: ``(N, D)`` flattened points.
        w: ``(N, D)`` hyperplane normals.
        b: ``(N,)`` offsets.
        lp: :class:`~monai_robust.utils.enums.LpNorm` ``LINF`` or ``L2``.
        bounds: ``(low, high)`` box, or ``None``.

    Returns:
        ``(N, D)`` steps ``d``; where the hyperplane does not meet the box, the step towards it that the box allows.

    Example::

        >>> d = project_hyperplane(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1), LpNorm.L2, None)
        >>> d
        tensor([[0.5000, 0.5000]])
    """
    if bounds is None:
        gap = ((w * points).sum(1) - b).unsqueeze(1)
        if lp == LpNorm.L2:
            return -gap * w / (w**2).sum(1, keepdim=True).clamp_min(1e-20)
        return -gap * w.sign() / w.abs().sum(1, keepdim=True).clamp_min(1e-20)
    lo, scale = bounds[0], bounds[1] - bounds[0]
    u, wu, bu = (points - lo) / scale, w * scale, b - lo * w.sum(1)
    project = _project_linf_unit if lp == LpNorm.LINF else _project_l2_unit
    return project(u, wu, bu) * scale


class FAB(BoundedAttack):
    r"""FAB-T, the targeted fast adaptive boundary attack used as in AutoAttack: for each of the most likely wrong
    classes, iterate towards the linearised decision boundary with the smallest possible step, biased back to the
    clean image; return an adversarial point within ``eps`` where one was found, else the clean image.

    Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020,
    https://arxiv.org/abs/1907.02044 (Algorithm 1), targeted version as in AutoAttack
    (https://arxiv.org/abs/2003.01690; standard: 100 iterations, 9 targets, 1 restart).

    Per sample, with ``x0`` the clean image, ``y`` its class, ``t`` the target and ``g = z_t - z_y``, each
    iteration costs one forward+backward and one forward pass::

        π(p)  = the smallest Lp step from p onto {u : g(x) + ∇g(x)·(u - x) = 0} inside ``bounds``
        d1, d2 = π(x), π(x0);   α = min(||d1|| / (||d1|| + ||d2||), alpha_max)
        x ← clip((1 - α)(x + eta·d1) + α(x0 + eta·d2))
        if x is misclassified: keep it if closer to x0 than the best so far; x ← x0 + beta (x - x0)

    The first run of each target starts at ``x0``; restarts start at a random point at Lp distance ``eps / 2``
    (the authors' ``min(best, eps) / 2`` with no best yet). The success criterion is untargeted. Two classes (or a
    single-logit head, as ``[0, f]``) leave one target, the other class: FAB-T is then untargeted FAB. With
    ``early_stop=True`` a sample stops once it has an adversarial within ``eps`` (AutoAttack only needs one; the
    robust accuracy is the same, the search for a smaller one is skipped).

    Args:
        network: classifier returning logits ``(N, classes)`` (``classes`` >= 1; multi-label heads are refused).
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call).
        num_steps: iterations per run (>= 1).
        num_restarts: runs per target (>= 1).
        num_target_classes: how many of the most likely wrong classes to target (>= 1; at most ``classes - 1``).
        alpha_max: largest bias towards the clean image, in [0, 1).
        eta: overshoot of the projection step (>= 1).
        beta: backward step towards the clean image after a success, in (0, 1].
        kwargs: ``lp`` (``"inf"`` or ``2``), ``bounds``, ``early_stop``, ``amp`` as in
            :class:`~monai_robust.attacks.base.Attack`.

    Raises:
        ValueError: When an argument is out of range, ``lp`` is L1, or ``targeted`` / ``loss`` is given.

    Example::

        >>> adv = FAB(net, eps=8 / 255, num_steps=100, bounds=(0.0, 1.0))(images, labels)
    """

    _repr_keys = ("num_steps", "num_restarts", "num_target_classes", "alpha_max", "eta", "beta")

    def __init__(
        self,
        network: torch.nn.Module,
        eps: Any = None,
        *,
        num_steps: int = 100,
        num_restarts: int = 1,
        num_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        **kwargs: Any,
    ) -> None:
        for key in ("targeted", "loss"):
            if kwargs.get(key):
                raise ValueError(f"FAB chooses its targets and criterion itself; got {key}={kwargs[key]!r}.")
        super().__init__(network, eps, **kwargs)
        if self.lp not in (LpNorm.LINF, LpNorm.L2):
            raise ValueError(f"FAB supports lp='inf' and lp=2, got lp={self.lp.value!r}.")
        self.num_steps = _check_positive_int("num_steps", num_steps)
        self.num_restarts = _check_positive_int("num_restarts", num_restarts)
        self.num_target_classes = _check_positive_int("num_target_classes", num_target_classes)
        if not 0 <= _check_positive("alpha_max", alpha_max, allow_zero=True) < 1:
            raise ValueError(f"alpha_max must lie in [0, 1), got alpha_max={alpha_max!r}.")
        if _check_positive("eta", eta) < 1:
            raise ValueError(f"eta must be >= 1, got eta={eta!r}.")
        if _check_positive("beta", beta) > 1:
            raise ValueError(f"beta must lie in (0, 1], got beta={beta!r}.")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.no_grad():
            logits, y = self.class_logits(images, labels)
        success = is_adversarial(logits, y)

        def run(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor]:
            best, norm = self._fab(x, y, t, eps, restart > 0)
            return best, norm <= eps * (1 + 1e-6)

        return attack_over_targets(images, y, logits, success, self.num_target_classes, self.num_restarts, run)

    def _start(self, x0: torch.Tensor, eps: float) -> torch.Tensor:
        """A random point at Lp distance ``eps / 2`` from ``x0``, clipped to ``bounds``."""
        g = self._generator
        if self.lp == LpNorm.LINF:
            t = torch.rand(x0.shape, dtype=x0.dtype, device=x0.device, generator=g) * 2 - 1
        else:
            t = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=g)
        t = t / batch_view(lp_norm(t, self.lp).clamp_min(1e-12), t)
        return clip_to_bounds(x0 + 0.5 * eps * t, self.bounds)

    def _fab(
        self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, eps: float, random_start: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run towards targets ``t``: the closest adversarial point found (else ``x0``) and its Lp distance
        (``inf`` where none was found)."""
        n = x0.shape[0]
        x = self._start(x0, eps) if random_start else x0.clone()
        best, best_norm = x0.clone(), torch.full((n,), math.inf, device=x0.device)
        rows = torch.arange(n, device=x0.device)
        for _ in range(self.num_steps):
            act = (best_norm > eps).nonzero().flatten() if self._stop else rows
            if act.numel() == 0:
                break
            xa, x0a = x[act].requires_grad_(True), x0[act]
            logits, _ = self.class_logits(xa, y[act])
            gap = logits.gather(1, t[act, None]).squeeze(1) - logits.gather(1, y[act, None]).squeeze(1)
            grad = self.input_grad(gap, xa)
            with torch.no_grad():
                xa, m = xa.detach(), act.numel()
                w = grad.reshape(m, -1)
                b = (w * xa.reshape(m, -1)).sum(1) - gap.detach()
                d = project_hyperplane(torch.cat([xa, x0a]).reshape(2 * m, -1), w.repeat(2, 1), b.repeat(2), self.lp,
                                       self.bounds).reshape((2 * m,) + xa.shape[1:])
                d1, d2 = d[:m], d[m:]
                n1, n2 = lp_norm(d1, self.lp).clamp_min(1e-8), lp_norm(d2, self.lp).clamp_min(1e-8)
                alpha = batch_view((n1 / (n1 + n2)).clamp(0.0, self.alpha_max), xa)
                xa = clip_to_bounds((xa + self.eta * d1) * (1 - alpha) + (x0a + self.eta * d2) * alpha, self.bounds)
                fooled = is_adversarial(self.class_logits(xa, y[act])[0], y[act])
                norm = lp_norm(xa - x0a, self.lp)
                closer = fooled & (norm < best_norm[act])
                best[act[closer]], best_norm[act[closer]] = xa[closer], norm[closer]
                xa[fooled] = x0a[fooled] + self.beta * (xa[fooled] - x0a[fooled])
                x[act] = xa
        return best, best_norm
