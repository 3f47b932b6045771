# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Square, the score-based black-box attack (L-inf, L2): random search over square (2D) or cube (3D) windows,
using only the model's logits; AutoAttack's check against gradient masking."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from monai_robust.attacks.base import BoundedAttack, is_adversarial
from monai_robust.attacks.functional import batch_view, clip_to_bounds, lp_norm, lp_project
from monai_robust.attacks.threat import _check_positive, _check_positive_int
from monai_robust.utils.enums import LpNorm

__all__ = ["Square", "square_fraction"]

_TINY = 1e-12
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def square_fraction(iteration: int, num_queries: int, p_init: float) -> float:
    """The fraction ``p`` of the image a window covers at ``iteration``: ``p_init`` halved at the paper's
    iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, rescaled to a budget of ``num_queries`` as the
    authors' code does (the schedule is written for 10000 queries).

    Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random search",
    ECCV 2020, https://arxiv.org/abs/1912.00049 (the schedule of the authors' code, as AutoAttack runs it).

    Example::

        >>> square_fraction(0, 5000, 0.8), square_fraction(100, 5000, 0.8)
        (0.8, 0.2)
    """
    it = int(iteration / num_queries * 10000)
    divisor = next((d for limit, d in _SCHEDULE if it <= limit), 512)
    return p_init / divisor


def _box_pattern(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Concentric boxes weighted ``1 / (k + 1)^2`` around the centre (the authors' ``eta_rectangles``, any rank)."""
    grids = torch.meshgrid(*[(torch.arange(s, device=device) - s // 2).abs() for s in shape], indexing="ij")
    ring = torch.stack(grids).amax(dim=0)
    rings = max(s // 2 + 1 for s in shape)
    tail = (1.0 / torch.arange(1, rings + 1, device=device, dtype=torch.float32) ** 2).flip(0).cumsum(0).flip(0)
    return tail[ring]


def _eta(side: int, dims: int, axis: int, device: torch.device) -> torch.Tensor:
    """The L2 window pattern: two halves along ``axis`` of opposite sign, each concentric boxes; unit L2 norm."""
    half = side // 2
    shape_a = tuple(half if a == axis else side for a in range(dims))
    shape_b = tuple(side - half if a == axis else side for a in range(dims))
    out = torch.cat([_box_pattern(shape_a, device), -_box_pattern(shape_b, device)], dim=axis)
    return out / out.norm()


class Square(BoundedAttack):
    r"""Square attack: score-based black-box random search that changes one random square (2D) or cube (3D)
    window per query and keeps the change when the margin loss decreases; no gradient is used.

    Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial attack via
    random search", ECCV 2020, https://arxiv.org/abs/1912.00049 (Algorithm 1; L-inf: Algorithm 2; L2: Algorithm 3).
    AutoAttack's standard version runs it with 5000 queries and ``p_init = 0.8``.

    Per sample, with the margin ``m = z_y - max_{i != y} z_i`` (targeted: ``max_{i != t} z_i - z_t``) to be driven
    below 0, and a window of side ``s = round((p · n / c)^(1/d))`` (``n`` values, ``c`` channels, ``d`` spatial
    dims, ``p`` from :func:`square_fraction`) at a random position of each sample:

    * L-inf: start from vertical stripes ``x + eps·(±1)``; each query sets the window, per channel, to
      ``±eps`` around ``x`` (a vertex of the ball), then clips to ``bounds``.
    * L2: start from a grid of window patterns (:func:`_eta`); each query moves the perturbation's mass from a second
      random window into the first, with a new ``±`` pattern, keeping ``||δ||_2 = eps``, then clips to ``bounds``.

    A sample stops as soon as it is misclassified (margin <= 0). Windows, signs and patterns are drawn per sample
    from the generator seeded by ``set_random_state``. ``num_queries`` forward passes per sample at most (the start
    counts as one); ``num_restarts`` reruns on the samples still robust. Samples misclassified on the clean image are
    returned unchanged; a sample not fooled gets the clean image back.

    Args:
        network: classifier returning logits ``(N, classes)`` (a single logit is read as ``[0, f]``).
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call).
        num_queries: forward passes per sample and run (>= 1).
        p_init: initial fraction of the image changed per query, in (0, 1].
        num_restarts: runs (>= 1), each on the samples still robust.
        kwargs: ``lp`` (``"inf"`` or ``2``), ``bounds``, ``targeted``, ``amp`` as in
            :class:`~monai_robust.attacks.base.Attack`.

    Raises:
        ValueError: When an argument is out of range, ``lp`` is L1, or ``loss`` is given (the margin is fixed).

    Example::

        >>> attack = Square(net, eps=8 / 255, num_queries=5000, bounds=(0.0, 1.0)).set_random_state(0)
        >>> adv = attack(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
    """

    black_box = True
    """Only the model's outputs are used (no gradient): a check for gradient masking."""

    _repr_keys = ("num_queries", "p_init", "num_restarts")

    def __init__(
        self,
        network: torch.nn.Module,
        eps: Any = None,
        *,
        num_queries: int = 5000,
        p_init: float = 0.8,
        num_restarts: int = 1,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("loss"):
            raise ValueError(f"Square uses the margin loss; got loss={kwargs['loss']!r}.")
        super().__init__(network, eps, **kwargs)
        if self.lp not in (LpNorm.LINF, LpNorm.L2):
            raise ValueError(f"Square supports lp='inf' and lp=2, got lp={self.lp.value!r}.")
        self.num_queries = _check_positive_int("num_queries", num_queries)
        if _check_positive("p_init", p_init) > 1:
            raise ValueError(f"p_init must lie in (0, 1], got p_init={p_init!r}.")
        self.p_init = float(p_init)
        self.num_restarts = _check_positive_int("num_restarts", num_restarts)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.no_grad():
            logits, y = self.class_logits(images, labels)
            todo = ~is_adversarial(logits, y, self.targeted)
            adv = images.clone()
            for _ in range(self.num_restarts):
                idx = todo.nonzero().flatten()
                if idx.numel() == 0:
                    break
                points = self._search(images[idx], y[idx], eps)
                ok = is_adversarial(self.class_logits(points, y[idx])[0], y[idx], self.targeted)
                adv[idx[ok]], todo[idx[ok]] = points[ok], False
        return adv

    # ------------------------------------------------------------------ the search
    def _margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, _ = self.class_logits(x, y)
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return other - z_y if self.targeted else z_y - other

    def _side(self, iteration: int, x: torch.Tensor) -> int:
        dims, channels = x.ndim - 2, x.shape[1]
        p = square_fraction(iteration, self.num_queries, self.p_init)
        side = max(int(round((p * x[0].numel() / channels) ** (1.0 / dims))), 1)
        if self.lp == LpNorm.L2:
            side = max(side, 3)
            side += 1 if side % 2 == 0 else 0  # odd, so the pattern has a centre (the authors round up)
        side = min(side, min(x.shape[2:]))
        return side - (1 if self.lp == LpNorm.L2 and side % 2 == 0 and side > 1 else 0)

    def _windows(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """Flat spatial indices ``(N, side^d)`` of one random window per sample."""
        n, spatial = x.shape[0], x.shape[2:]
        strides = torch.tensor([math.prod(spatial[a + 1 :]) for a in range(len(spatial))], device=x.device)
        corner = torch.stack(
            [torch.randint(0, s - side + 1, (n,), device=x.device, generator=self._generator) for s in spatial], dim=1
        )
        offsets = torch.cartesian_prod(*[torch.arange(side, device=x.device)] * len(spatial)).reshape(-1, len(spatial))
        return (corner * strides).sum(1, keepdim=True) + (offsets * strides).sum(1)[None]

    def _signs(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        bits = torch.randint(0, 2, shape, device=like.device, generator=self._generator)
        return bits.to(like.dtype) * 2 - 1

    def _init(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        if self.lp == LpNorm.LINF:  # vertical stripes
            delta = eps * self._signs((n, c) + (1,) * (len(spatial) - 1) + (spatial[-1],), x)
            return clip_to_bounds(x + delta, self.bounds)
        side = max(min(spatial) // 5, 1)
        delta = torch.zeros_like(x)
        starts = [range((s - side * 5) // 2 if s >= 5 * side else 0, s - side + 1, side) for s in spatial]
        for corner in itertools.product(*starts):
            axis = int(torch.randint(0, len(spatial), (1,), generator=self._generator, device=x.device))
            pattern = _eta(side, len(spatial), axis, x.device).to(x.dtype) if side > 1 else x.new_ones((1,) * len(spatial))
            window = (slice(None), slice(None)) + tuple(slice(k, k + side) for k in corner)
            delta[window] += pattern * self._signs((n, c) + (1,) * len(spatial), x)
        delta = delta / batch_view(lp_norm(delta, self.lp).clamp_min(_TINY), x)
        return clip_to_bounds(x + eps * delta, self.bounds)

    def _search(self, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """One run of the random search on a batch; returns the best points."""
        best = self._init(x, eps)
        margin = self._margin(best, y)
        for i in range(self.num_queries - 1):
            idx = (margin > 0).nonzero().flatten()
            if idx.numel() == 0:
                break
            xi, bi, side = x[idx], best[idx], self._side(i, x)
            step = self._linf_step if self.lp == LpNorm.LINF else self._l2_step
            new = step(xi, bi, side, eps)
            m = self._margin(new, y[idx])
            better = m < margin[idx]
            best[idx[better]], margin[idx[better]] = new[better], m[better]
        return best

    def _linf_step(self, x: torch.Tensor, best: torch.Tensor, side: int, eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        win = self._windows(x, side)
        mask = torch.zeros(n, x[0, 0].numel(), device=x.device, dtype=x.dtype).scatter_(1, win, 1.0)
        mask = mask.reshape((n, 1) + x.shape[2:])
        new = best + mask * (2 * eps) * self._signs((n, c) + (1,) * (x.ndim - 2), x)
        return clip_to_bounds(x + lp_project(new - x, eps, self.lp), self.bounds)

    def _l2_step(self, x: torch.Tensor, best: torch.Tensor, side: int, eps: float) -> torch.Tensor:
        n, c, dims = x.shape[0], x.shape[1], x.ndim - 2
        delta = (best - x).reshape(n, c, -1)
        win1, win2 = self._windows(x, side), self._windows(x, side)
        idx1, idx2 = win1[:, None].expand(n, c, -1), win2[:, None].expand(n, c, -1)
        old = delta.gather(2, idx1)
        mask = torch.zeros(n, 1, delta.shape[2], device=x.device, dtype=x.dtype)
        mask = mask.scatter(2, win1[:, None], 1.0).scatter(2, win2[:, None], 1.0)
        norm_img, norm_windows = lp_norm(delta, 2), lp_norm(delta * mask, 2)
        axes = torch.randint(0, dims, (n,), device=x.device, generator=self._generator)
        patterns = torch.stack([_eta(side, dims, a, x.device).flatten() for a in range(dims)]).to(x.dtype)[axes]
        new = patterns[:, None] * self._signs((n, c, 1), x) + old / (old.norm(dim=2, keepdim=True) + _TINY)
        mass = ((eps**2 - norm_img**2).clamp_min(0) / c + norm_windows**2).sqrt()
        new = new / (new.norm(dim=2, keepdim=True) + _TINY) * mass[:, None, None]
        delta = delta.scatter(2, idx2, 0.0).scatter(2, idx1, new).reshape(x.shape)
        delta = delta / batch_view(lp_norm(delta, 2) + _TINY, x) * eps
        return clip_to_bounds(x + delta, self.bounds)
