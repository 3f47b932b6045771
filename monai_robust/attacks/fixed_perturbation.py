# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A fixed perturbation δ once it is fitted: its record (:class:`UAPResult`, saved and loaded through
:mod:`monai_robust.data.perturbation`), the random-noise control of the same norm it is compared with
(:func:`noise_control`), its measurement (:func:`evaluate_uap`: fooling and targeted success rates, overall and per
class, Hirano et al. 2021) and the clean/perturbed mix of adversarial retraining (:func:`perturb_fraction`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.utils import convert_to_tensor
from torch import nn

from monai_robust.attacks.base import attack_mode
from monai_robust.attacks.functional import clip_to_bounds, lp_norm
from monai_robust.attacks.threat import _check_bounds, _check_positive_int
from monai_robust.data.batches import iter_image_batches
from monai_robust.data.perturbation import read_perturbation_record, save_perturbation
from monai_robust.metrics.robustness import fooling_rate, robust_accuracy, targeted_success_rate, to_class_predictions
from monai_robust.metrics.universal import per_class_fooling_rate, per_class_targeted_success_rate
from monai_robust.utils.enums import LpNorm, as_lp

__all__ = ["UAPResult", "broadcast_delta", "evaluate_uap", "noise_control", "perturb_fraction"]


def broadcast_delta(delta: Any, like_shape: tuple[int, ...]) -> torch.Tensor:
    """δ ``(C, *spatial)`` or ``(1, C, *spatial)`` as ``(1, C, *spatial)`` float, checked to broadcast to
    ``like_shape`` (a batch shape ``(N, C, *spatial)``).

    Raises:
        ValueError: When it does not broadcast (both shapes are named).

    Example::

        >>> broadcast_delta(torch.zeros(1, 8, 8), (4, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """
    d = convert_to_tensor(delta, track_meta=False)
    d = d if isinstance(d, torch.Tensor) else torch.as_tensor(d)
    if d.ndim == len(like_shape) - 1:
        d = d.unsqueeze(0)
    ok = d.ndim == len(like_shape) and d.shape[0] == 1
    if ok:
        try:
            ok = torch.broadcast_shapes(d.shape, like_shape) == torch.Size(like_shape)
        except RuntimeError:
            ok = False
    if not ok:
        raise ValueError(
            f"delta of shape {tuple(torch.as_tensor(delta).shape)} does not broadcast to images of shape "
            f"{tuple(like_shape)}: expected (C, *spatial) or (1, C, *spatial) with the images' channels and size."
        )
    return d if d.is_floating_point() else d.float()


def _num_classes(logits: torch.Tensor) -> int:
    return 2 if logits.shape[1] == 1 else int(logits.shape[1])


@dataclass
class UAPResult:
    """A fitted universal perturbation and how it was fitted.

    Args:
        delta: δ ``(C, *spatial)`` in model-input units, on the CPU.
        eps: its budget ``||δ||_p <= eps`` in model-input units.
        lp: ``"2"`` or ``"inf"``.
        zeta: the relative budget when the budget was given as ζ (``eps = zeta * mean ||x||_p``), else ``None``.
        target: the target class of a targeted UAP, else ``None``.
        bounds: ``(low, high)`` the perturbed images are clipped to, or ``None``.
        method: the fitter's class name.
        curve: per pass, the fooling rate (non-targeted) or targeted success rate on the fitting images.
        converged: whether the last rate reached the fitter's ``target_rate``.
        seed: the seed that shuffled tensor sources.

    Example::

        >>> result = SGDUAP(net, zeta=0.04, bounds=(0.0, 1.0)).fit(images)
        >>> paths = result.save("uap.pt")  # uap.pt + uap.png (2D) or uap.nii.gz (3D)
        >>> perturbed = UAPResult.load("uap.pt").apply(images)
    """

    delta: torch.Tensor
    eps: float
    lp: str
    zeta: float | None = None
    target: int | None = None
    bounds: tuple[float, float] | None = None
    method: str = ""
    curve: list[float] = field(default_factory=list)
    converged: bool = False
    seed: int | None = None

    @property
    def metric(self) -> str:
        """``"targeted_success_rate"`` for a targeted UAP, else ``"fooling_rate"``: what :attr:`curve` holds."""
        return "fooling_rate" if self.target is None else "targeted_success_rate"

    @property
    def rate(self) -> float:
        """The last value of :attr:`curve` (``nan`` before any pass)."""
        return float(self.curve[-1]) if self.curve else float("nan")

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``clip(images + δ, bounds)`` for a batch ``(N, C, *spatial)`` or one image ``(C, *spatial)``.

        Raises:
            ValueError: When δ does not broadcast to ``images`` (both shapes are named).
        """
        x = convert_to_tensor(images, track_meta=False)
        batch = x if x.ndim == self.delta.ndim + 1 else x.unsqueeze(0)
        d = broadcast_delta(self.delta, tuple(batch.shape)).to(batch)
        out = clip_to_bounds(batch + d, self.bounds)
        return out if x.ndim == self.delta.ndim + 1 else out[0]

    def to_dict(self) -> dict[str, Any]:
        """Everything as a dict of a tensor and plain Python values (what :meth:`save` writes)."""
        return {
            "delta": self.delta.detach().cpu(),
            "eps": float(self.eps),
            "lp": str(self.lp),
            "zeta": None if self.zeta is None else float(self.zeta),
            "target": None if self.target is None else int(self.target),
            "bounds": None if self.bounds is None else [float(b) for b in self.bounds],
            "method": self.method,
            "curve": [float(r) for r in self.curve],
            "converged": bool(self.converged),
            "seed": self.seed,
        }

    def save(self, path: str | os.PathLike, view: bool = True) -> list[Path]:
        """Writes δ and its record to ``path`` (``.pt``, a dict with the tensor under ``"delta"``, written
        atomically) and, with ``view``, a picture of δ beside it (a PNG for 2D, a NIfTI for 3D; see
        :func:`~monai_robust.data.perturbation.save_perturbation`).

        Returns:
            The paths written.

        Raises:
            ValueError: When ``path`` does not end in ``.pt``.
        """
        return save_perturbation(self.to_dict(), path, view=view)

    @classmethod
    def load(cls, path: str | os.PathLike) -> UAPResult:
        """Reads what :meth:`save` wrote (or a checkpoint of a fit).

        Raises:
            ValueError: When the file does not exist or is not a saved UAP.
        """
        obj = read_perturbation_record(path)
        if "eps" not in obj:
            raise ValueError(f"{str(path)!r} does not hold a saved UAP (a dict with 'delta' and 'eps').")
        delta = obj["delta"]
        bounds = obj.get("bounds")
        return cls(
            delta=delta,
            eps=float(obj["eps"]),
            lp=str(obj.get("lp", "2")),
            zeta=obj.get("zeta"),
            target=obj.get("target"),
            bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
            method=str(obj.get("method", "")),
            curve=[float(r) for r in obj.get("curve", [])],
            converged=bool(obj.get("converged", False)),
            seed=obj.get("seed"),
        )


def evaluate_uap(
    network: nn.Module,
    delta: Any,
    source: Any,
    *,
    bounds: tuple[float, float] | None,
    target: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Fooling rate and targeted success rate of a fixed perturbation (a UAP or a noise control), overall and per
    class, on the images of ``source`` (Hirano et al. 2021).

    Args:
        network: the classifier.
        delta: δ ``(C, *spatial)`` or ``(1, C, *spatial)``, a :class:`UAPResult` (its ``bounds`` are *not* used:
            pass them), Tensor or ndarray.
        source: images, as for :meth:`UniversalPerturbation.fit`; labels are used when every batch has them.
        bounds: ``(low, high)`` to clip ``x + δ`` to, or ``None``.
        target: also report the targeted success rate towards this class.
        batch_size: batch size for a tensor source.

    Returns:
        ``{"n", "fooling_rate", "per_class_fooling_rate", "per_class_by"}`` plus ``"targeted_success_rate"`` and
        ``"per_class_targeted_success_rate"`` with a ``target``, and ``"clean_accuracy"``, ``"perturbed_accuracy"``
        with labels. Classes are the true labels when known (``per_class_by == "label"``), else the clean
        predictions (``"prediction"``).

    Raises:
        ValueError: When the source holds no image, δ does not broadcast to the images, or ``target`` is out of
            range.

    Example::

        >>> evaluate_uap(net, result.delta, test_images, bounds=(0.0, 1.0))["fooling_rate"]
    """
    d0 = delta.delta if isinstance(delta, UAPResult) else delta
    bounds = _check_bounds(bounds)
    param = next(network.parameters(), None)
    device = torch.device("cpu") if param is None else param.device
    clean, adv, labels, have_labels = [], [], [], True
    with attack_mode(network), torch.no_grad():
        for x, y in iter_image_batches(source, _check_positive_int("batch_size", batch_size)):
            if x.shape[0] == 0:
                continue
            x = x.to(device)
            d = broadcast_delta(d0, tuple(x.shape)).to(x)
            out_c, out_a = network(x), network(clip_to_bounds(x + d, bounds))
            if target is not None and not 0 <= int(target) < _num_classes(out_c):
                raise ValueError(f"target={target!r} is out of range for a model with {_num_classes(out_c)} classes.")
            clean.append(to_class_predictions(out_c).cpu())
            adv.append(to_class_predictions(out_a).cpu())
            have_labels = have_labels and y is not None and y.ndim == 1
            if have_labels:
                labels.append(y.cpu().long())
    if not clean:
        raise ValueError("the source yielded no images to evaluate the perturbation on.")
    c, a = torch.cat(clean), torch.cat(adv)
    y = torch.cat(labels) if have_labels else None
    groups = c if y is None else y
    out: dict[str, Any] = {
        "n": int(c.shape[0]),
        "fooling_rate": fooling_rate(c, a),
        "per_class_fooling_rate": per_class_fooling_rate(c, a, groups),
        "per_class_by": "prediction" if y is None else "label",
    }
    if target is not None:
        out["targeted_success_rate"] = targeted_success_rate(a, int(target))
        out["per_class_targeted_success_rate"] = per_class_targeted_success_rate(a, int(target), groups)
    if y is not None:
        out["clean_accuracy"] = robust_accuracy(c, y)
        out["perturbed_accuracy"] = robust_accuracy(a, y)
    return out


def perturb_fraction(
    images: torch.Tensor,
    delta: torch.Tensor,
    fraction: float,
    bounds: tuple[float, float] | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adds δ to a random ``fraction`` of a batch (the clean/UAP mix of adversarial retraining).

    Args:
        images: ``(N, C, *spatial)``.
        delta: ``(C, *spatial)`` or ``(1, C, *spatial)``.
        fraction: probability in [0, 1] that an image is perturbed (drawn independently per image).
        bounds: ``(low, high)`` to clip perturbed images to, or ``None``.
        generator: seeds the draw (CPU generator).

    Returns:
        ``(mixed images, (N,) bool mask of the perturbed ones)``.

    Raises:
        ValueError: When ``fraction`` is outside [0, 1] or δ does not broadcast.

    Example::

        >>> mixed, mask = perturb_fraction(images, result.delta, 0.5, (0.0, 1.0), torch.Generator().manual_seed(0))
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"fraction must lie in [0, 1], got fraction={fraction!r}.")
    d = broadcast_delta(delta, tuple(images.shape)).to(images)
    mask = (torch.rand(images.shape[0], generator=generator) < fraction).to(images.device)
    view = mask.reshape((-1,) + (1,) * (images.ndim - 1))
    return torch.where(view, clip_to_bounds(images + d, bounds), images), mask


def noise_control(
    delta: torch.Tensor,
    kind: str = "uniform",
    lp: str | float | LpNorm = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random noise with the same Lp norm as ``delta``: the control every UAP is compared with (Hirano et al. 2021).

    ``"uniform"`` draws i.i.d. ``U(-1, 1)`` values, ``"gaussian"`` i.i.d. ``N(0, 1)``; the draw is then scaled so
    that its Lp norm (over all of ``delta``) equals ``||delta||_p``.

    Args:
        delta: the perturbation ``(C, *spatial)`` or ``(1, C, *spatial)``.
        kind: ``"uniform"`` or ``"gaussian"``.
        lp: the norm to match: ``2`` or ``"inf"`` (or ``1``).
        generator: seeds the draw (on ``delta``'s device).

    Returns:
        Noise of ``delta``'s shape, dtype and device.

    Raises:
        ValueError: When ``kind`` or ``lp`` is unknown, or ``delta`` is empty or not finite.

    Example::

        >>> noise = noise_control(result.delta, "gaussian", lp=2, generator=torch.Generator().manual_seed(0))
    """
    kinds = ("uniform", "gaussian")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}, got kind={kind!r}.")
    lp = as_lp(lp)
    d = torch.as_tensor(delta)
    if d.numel() == 0 or not bool(torch.isfinite(d).all()):
        raise ValueError(f"delta must be a non-empty finite tensor, got shape {tuple(d.shape)}.")
    d = d if d.is_floating_point() else d.float()
    kw = {"dtype": d.dtype, "device": d.device, "generator": generator}
    noise = torch.rand(d.shape, **kw) * 2 - 1 if kind == "uniform" else torch.randn(d.shape, **kw)
    target = lp_norm(d.reshape(1, -1), lp)
    return noise * (target / lp_norm(noise.reshape(1, -1), lp).clamp_min(1e-12))
