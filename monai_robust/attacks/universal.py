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
* :class:`UAPResult` holds δ and how it was fitted; it saves ``.pt`` (readable by
  ``monai_robust.transforms.ApplyPerturbation``) with a PNG (2D) or NIfTI (3D) view.
* :func:`evaluate_uap` measures fooling / targeted success overall and per class; :func:`uap_adversarial_retraining`
  fine-tunes a model against UAPs (Hirano et al. 2021).

Sources of fitting images and the random controls are in :mod:`monai_robust.attacks.uap_sources`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from monai.utils import convert_to_tensor, optional_import
from torch import nn

from monai_robust.attacks.base import (
    LossFn,
    ThreatModel,
    _check_bounds,
    _check_eps,
    _check_positive,
    _check_positive_int,
    _unpack_threat,
    attack_mode,
    default_loss,
)
from monai_robust.attacks.functional import clip_to_bounds, lp_norm, lp_normalize, lp_project
from monai_robust.attacks.uap_sources import iter_image_batches, split_batch
from monai_robust.metrics.robustness import fooling_rate, robust_accuracy, targeted_success_rate, to_class_predictions
from monai_robust.metrics.universal import per_class_fooling_rate, per_class_targeted_success_rate
from monai_robust.utils.enums import LpNorm, as_lp

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "SGDUAP",
    "IterativeUAP",
    "RetrainingReport",
    "UAPResult",
    "UniversalPerturbation",
    "evaluate_uap",
    "perturb_fraction",
    "uap_adversarial_retraining",
]

_CHECKPOINT_VERSION = 1


def _delta_batch(delta: Any, like_shape: tuple[int, ...]) -> torch.Tensor:
    """δ ``(C, *spatial)`` or ``(1, C, *spatial)`` as ``(1, C, *spatial)``, checked to broadcast to ``like_shape``."""
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


def _success(adv_pred: torch.Tensor, clean_pred: torch.Tensor, target: int | None) -> torch.Tensor:
    """Per-sample: prediction changed (non-targeted) or equals ``target``."""
    return adv_pred == target if target is not None else adv_pred != clean_pred


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
        d = _delta_batch(self.delta, tuple(batch.shape)).to(batch)
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
        """Writes δ and its record to ``path`` (``.pt``, a dict with the tensor under ``"delta"``) and, with ``view``,
        a picture of δ beside it: a PNG for 2D (gray 128 = 0, symmetric scale ``±max|δ|``, channels side by side;
        needs pillow) or a NIfTI ``.nii.gz`` for 3D (values in model-input units, identity affine, channels last).

        Returns:
            The paths written.

        Raises:
            ValueError: When ``path`` does not end in ``.pt``.
        """
        path = Path(path)
        if path.suffix != ".pt":
            raise ValueError(f"path must end in .pt, got {str(path)!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_dict(), path)
        written = [path]
        if view:
            written.append(_save_view(self.delta, path.with_suffix("")))
        return written

    @classmethod
    def load(cls, path: str | os.PathLike) -> UAPResult:
        """Reads what :meth:`save` wrote (or a checkpoint of a fit).

        Raises:
            ValueError: When the file does not exist or is not a saved UAP.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"UAP file {str(path)!r} does not exist.")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or not isinstance(obj.get("delta"), torch.Tensor) or "eps" not in obj:
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


def _save_view(delta: torch.Tensor, stem: Path) -> Path:
    d = delta.detach().cpu().float()
    if d.ndim == 4:  # (C, D, H, W) -> NIfTI (D, H, W[, C])
        import nibabel as nib

        arr = d.permute(1, 2, 3, 0).numpy()
        out = stem.with_name(stem.name + ".nii.gz")
        nib.save(nib.Nifti1Image(arr[..., 0] if arr.shape[-1] == 1 else arr, np.eye(4)), str(out))
        return out
    if d.ndim != 3:
        raise ValueError(f"a view is written for 2D (C, H, W) or 3D (C, D, H, W) delta, got shape {tuple(d.shape)}.")
    pil, has_pil = optional_import("PIL.Image")
    if not has_pil:
        raise ModuleNotFoundError("the PNG view of a 2D UAP needs pillow: pip install pillow, or save(view=False).")
    scale = float(d.abs().max()) or 1.0
    img = (128 + 127 * d / scale).round().clamp(0, 255).to(torch.uint8)
    arr = img.permute(1, 2, 0).numpy() if d.shape[0] == 3 else torch.cat(list(img), dim=1).numpy()
    out = stem.with_name(stem.name + ".png")
    pil.fromarray(arr).save(out)
    return out


class UniversalPerturbation(Randomizable):
    """Base of the UAP fitters: budget, source reading, evaluation passes, checkpoints, progress and logging.

    Subclasses implement :meth:`fit_pass` (one pass over the fitting images that updates δ). :meth:`fit` runs
    passes until the rate on the fitting images reaches ``target_rate`` or ``max_passes`` is spent. The rate is the
    fooling rate (prediction differs from the clean prediction, Moosavi-Dezfooli et al. 2017) or, with ``target``,
    the targeted success rate (prediction equals ``target`` over all inputs, Hirano & Takemoto 2020); it is
    measured after each pass, with δ fixed, by a separate forward-only pass (the per-pass curve).

    Args:
        network: classifier returning logits ``(N, classes)`` (one logit for a binary head).
        eps: absolute budget ``||δ||_p <= eps`` in model-input units, or a :class:`ThreatModel` (then ``lp`` and
            ``bounds`` default to its values). Give exactly one of ``eps`` and ``zeta``.
        zeta: relative budget ζ > 0: ``eps = zeta * mean_i ||x_i||_p`` over the reference images of :meth:`fit`
            (Hirano et al. 2021 use ζ = 2 % and 4 % with L2).
        lp: ``2`` (default) or ``"inf"``.
        bounds: ``(low, high)`` the perturbed images are clipped to, and inside which the fitting images must lie;
            ``None`` for no box.
        target: target class for a targeted UAP; ``None`` (default) for non-targeted.
        max_passes: most passes over the fitting images (>= 1).
        target_rate: stop once the rate on the fitting images reaches this, in (0, 1]; default 1.0. The papers stop
            at 0.8 (Moosavi-Dezfooli et al.'s δ = 0.2).
        batch_size: minibatch size when the source is a tensor (>= 1); DataLoaders keep theirs.
        progress: show a tqdm bar over passes.
        summary_writer: a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``) for the per-pass curve.
        tag: the TensorBoard tag prefix: ``f"{tag}/{metric}"``.

    Raises:
        ValueError: When an argument is out of range (quoted), both or neither of ``eps``/``zeta`` is given,
            ``zeta <= 0``, ``lp`` is 1, or ``target < 0``.

    Example::

        >>> class SignOfMean(UniversalPerturbation):  # a new fitter only writes one pass
        ...     def fit_pass(self, source, delta, generator):
        ...         for x, clean in self.batches(source, generator):
        ...             delta = lp_project(delta + self._eps * lp_normalize(x.mean(0, keepdim=True), self.lp),
        ...                                self._eps, self.lp)
        ...         return delta
    """

    def __init__(
        self,
        network: nn.Module,
        eps: float | ThreatModel | None = None,
        *,
        zeta: float | None = None,
        lp: str | float | None = None,
        bounds: tuple[float, float] | None = None,
        target: int | None = None,
        max_passes: int = 10,
        target_rate: float = 1.0,
        batch_size: int = 32,
        progress: bool = False,
        summary_writer: Any = None,
        tag: str = "uap",
    ) -> None:
        eps, lp, bounds = _unpack_threat(network, eps, lp, bounds)
        if (eps is None) == (zeta is None):
            raise ValueError(f"give exactly one of eps (absolute) and zeta (relative), got eps={eps!r}, zeta={zeta!r}.")
        if zeta is not None and not (
            isinstance(zeta, (int, float)) and not isinstance(zeta, bool) and math.isfinite(zeta) and zeta > 0
        ):
            raise ValueError(f"zeta must be a finite number > 0, got zeta={zeta!r}.")
        self.network = network
        self.eps = None if eps is None else _check_eps(eps)
        if self.eps == 0.0:
            raise ValueError(f"eps must be > 0 for a universal perturbation, got eps={eps!r}.")
        self.zeta = None if zeta is None else float(zeta)
        self.lp = as_lp(2 if lp is None else lp)
        if self.lp == LpNorm.L1:
            raise ValueError(f"universal perturbations support lp=2 and lp='inf', got lp={lp!r}.")
        self.bounds = _check_bounds(bounds)
        if target is not None and (not isinstance(target, (int, np.integer)) or isinstance(target, bool) or target < 0):
            raise ValueError(f"target must be a class index >= 0 or None, got target={target!r}.")
        self.target = None if target is None else int(target)
        self.max_passes = _check_positive_int("max_passes", max_passes)
        self.target_rate = _check_positive("target_rate", target_rate)
        if self.target_rate > 1:
            raise ValueError(f"target_rate must lie in (0, 1], got target_rate={target_rate!r}.")
        self.batch_size = _check_positive_int("batch_size", batch_size)
        if summary_writer is not None and not callable(getattr(summary_writer, "add_scalar", None)):
            raise ValueError(f"summary_writer must have add_scalar (a SummaryWriter), got {type(summary_writer).__name__}.")
        self.progress = bool(progress)
        self.summary_writer = summary_writer
        self.tag = str(tag)
        self._checked = False
        self._cache: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None

    @property
    def metric(self) -> str:
        """``"targeted_success_rate"`` when ``target`` is set, else ``"fooling_rate"``."""
        return "fooling_rate" if self.target is None else "targeted_success_rate"

    def randomize(self, data: Any = None) -> None:
        """The seed of each fit comes from ``self.R``; nothing to pre-draw."""

    def __repr__(self) -> str:
        keys = ("eps", "zeta", "lp", "bounds", "target", "max_passes", "target_rate", "batch_size")
        keys += tuple(getattr(self, "_repr_keys", ()))
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        source: Any,
        *,
        reference: Any = None,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> UAPResult:
        """Fits δ on the images of ``source``.

        Args:
            source: the fitting images: a tensor ``(N, C, *spatial)``, a ``{"image": ...}`` mapping, or a
                re-iterable of batches such as a MONAI ``DataLoader`` (see
                :func:`~monai_robust.attacks.uap_sources.iter_image_batches`); medical or natural images.
            reference: images whose mean ``||x||_p`` defines the ζ budget; default ``source``. Give the medical
                images here when fitting on natural images (Minagi et al. 2022).
            checkpoint: a ``.pt`` path where the state is saved after every pass.
            resume: continue from ``checkpoint`` when it exists (δ, curve and shuffling state), for up to
                ``max_passes`` passes in all.

        Returns:
            A :class:`UAPResult` with δ on the CPU.

        Raises:
            ValueError: When the source holds no image, a batch does not match δ's shape, images lie outside
                ``bounds`` or are not finite, ``target`` is out of range for the model, the model output is not
                ``(N, classes)``, or the checkpoint was written by a different configuration.
        """
        if resume and checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path.")
        param = next(self.network.parameters(), None)
        self._device = torch.device("cpu") if param is None else param.device
        self._dtype = torch.float32 if param is None or not param.is_floating_point() else param.dtype
        self._checked = False
        state = self._read_checkpoint(checkpoint) if resume and Path(checkpoint).is_file() else None
        try:
            with attack_mode(self.network):
                return self._fit(source, reference, checkpoint, state)
        finally:
            self._cache = None  # the fitting images and their clean predictions are not kept

    def _fit(self, source: Any, reference: Any, checkpoint: Any, state: dict[str, Any] | None) -> UAPResult:
        shape = self._prepare(source)
        if state is None:
            eps = self._budget(source if reference is None else reference)
            seed = int(self.R.randint(0, 2**31 - 1))
            generator = torch.Generator().manual_seed(seed)
            delta = torch.zeros((1,) + shape[1:], device=self._device, dtype=self._dtype)
            curve: list[float] = []
        else:
            eps, seed, curve = float(state["eps"]), state["seed"], [float(r) for r in state["curve"]]
            generator = torch.Generator()
            generator.set_state(state["generator_state"])
            delta = _delta_batch(state["delta"], shape).to(self._device, self._dtype)
        self._eps = eps
        self._start_fit(eps, len(curve))
        bar = tqdm(total=self.max_passes, initial=len(curve), desc=type(self).__name__) if self._bar() else None
        try:
            while len(curve) < self.max_passes and not (curve and curve[-1] >= self.target_rate):
                delta = self.fit_pass(source, delta, generator).detach()
                curve.append(self._rate(source, delta))
                if self.summary_writer is not None:
                    self.summary_writer.add_scalar(f"{self.tag}/{self.metric}", curve[-1], len(curve))
                if checkpoint is not None:
                    self._write_checkpoint(checkpoint, delta, eps, seed, curve, generator)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({self.metric: f"{curve[-1]:.3f}"})
        finally:
            if bar is not None:
                bar.close()
        return UAPResult(
            delta=delta[0].detach().cpu(),
            eps=eps,
            lp=self.lp.value,
            zeta=self.zeta,
            target=self.target,
            bounds=self.bounds,
            method=type(self).__name__,
            curve=curve,
            converged=bool(curve) and curve[-1] >= self.target_rate,
            seed=seed,
        )

    def fit_pass(self, source: Any, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One pass over the fitting images, returning the updated δ ``(1, C, *spatial)``; set by subclasses.

        Iterate :meth:`batches`; use :meth:`predict`, :meth:`perturbed`, :meth:`success`, :meth:`attack_labels`;
        the budget of this fit is ``self._eps``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement fit_pass().")

    def _start_fit(self, eps: float, passes_done: int) -> None:
        """Hook run once per fit, inside the attack mode, with the resolved budget and the passes already done."""

    # ------------------------------------------------------------------ helpers for subclasses
    def batches(
        self, source: Any, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The fitting images batch by batch on the model's device, with their clean predictions ``(N,)`` for a
        non-targeted fitter (``None`` for a targeted one, which does not need them). A tensor or mapping source is
        shuffled by ``generator`` and its clean predictions are computed once per fit; other sources are iterated
        as they are (their own shuffling) and predicted batch by batch."""
        if self._cache is not None and self._cache[0] is source:
            _, x_all, clean_all = self._cache
            n = x_all.shape[0]
            order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                x = x_all[idx.to(x_all.device)].to(self._device, self._dtype)
                yield x, (None if clean_all is None else clean_all[idx.to(clean_all.device)])
            return
        for x, _ in iter_image_batches(source, self.batch_size, generator):
            if x.shape[0] == 0:
                continue
            x = self._check_batch(x)
            yield x, (self.predict(x) if self.target is None else None)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class predictions ``(N,)`` without gradient; checks the output and ``target`` on the first call."""
        with torch.no_grad():
            return to_class_predictions(self.logits(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass (with the output shape and ``target`` checked on the first call)."""
        out = self.network(x)
        if not self._checked:
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"the network must return logits (N, classes) with N={x.shape[0]}, got {shape}.")
            if self.target is not None and self.target >= _num_classes(out):
                raise ValueError(
                    f"target={self.target} is out of range for a model with {_num_classes(out)} classes."
                )
            self._checked = True
        return out.float()

    def perturbed(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``clip(x + δ, bounds)``."""
        return clip_to_bounds(x + delta, self.bounds)

    def success(self, adv_pred: torch.Tensor, clean_pred: torch.Tensor | None) -> torch.Tensor:
        """Per-sample: fooled (non-targeted: differs from ``clean_pred``) or classified as ``target``."""
        return _success(adv_pred, clean_pred, self.target)

    def attack_labels(self, clean_pred: torch.Tensor | None, n: int) -> torch.Tensor:
        """Labels ``(n,)`` the inner step moves away from (the clean predictions) or towards (``target``)."""
        if self.target is None:
            return clean_pred
        return torch.full((n,), self.target, dtype=torch.long, device=self._device)

    # ------------------------------------------------------------------ internals
    def _bar(self) -> bool:
        if self.progress and not _has_tqdm:
            raise ModuleNotFoundError("progress=True needs tqdm: pip install tqdm.")
        return self.progress

    def _check_batch(self, x: torch.Tensor) -> torch.Tensor:
        self._check_values(x)
        return x.to(self._device, self._dtype)

    def _check_values(self, x: torch.Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"fitting images contain {int((~torch.isfinite(x)).sum())} NaN/Inf values.")
        if self.bounds is not None and x.numel():
            lo, hi = float(x.min()), float(x.max())
            tol = 1e-5 * (self.bounds[1] - self.bounds[0])
            if lo < self.bounds[0] - tol or hi > self.bounds[1] + tol:
                raise ValueError(
                    f"fitting images range [{lo:g}, {hi:g}] lies outside bounds={self.bounds}; preprocess them into "
                    "the model's input range or set bounds to match the data."
                )

    def _prepare(self, source: Any) -> tuple[int, ...]:
        """Checks the source and returns the images' shape (from the first batch). A tensor or mapping source is
        checked once and cached, with its clean predictions for a non-targeted fitter."""
        if isinstance(source, (torch.Tensor, np.ndarray)) or (isinstance(source, Mapping) and "image" in source):
            x_all, _ = split_batch(source, "source")
            if x_all.shape[0] == 0:
                raise ValueError("the source holds no images: a universal perturbation needs fitting images.")
            for i in range(0, x_all.shape[0], 4096):
                self._check_values(x_all[i : i + 4096])
            clean = None
            if self.target is None:  # the model is fixed during a fit: predict the clean images once
                chunks = [x_all[i : i + 256].to(self._device, self._dtype) for i in range(0, x_all.shape[0], 256)]
                clean = torch.cat([self.predict(c) for c in chunks])
            self._cache = (source, x_all, clean)
            return tuple(x_all.shape)
        for x, _ in iter_image_batches(source, self.batch_size):
            if x.shape[0]:
                return tuple(self._check_batch(x).shape)
        raise ValueError("the source yielded no images: a universal perturbation needs fitting images.")

    def _budget(self, reference: Any) -> float:
        """eps: the absolute budget, or ζ times the mean ``||x||_p`` of the reference images."""
        if self.zeta is None:
            return float(self.eps)
        total, count = 0.0, 0
        for x, _ in iter_image_batches(reference, 256):
            total += float(lp_norm(x.float(), self.lp).double().sum())
            count += x.shape[0]
        if count == 0:
            raise ValueError("the reference yielded no images: the zeta budget needs reference images.")
        eps = self.zeta * total / count
        if not eps > 0:
            raise ValueError(f"the mean ||x||_p of the reference images is {total / count!r}: zeta gives eps=0.")
        return eps

    def _rate(self, source: Any, delta: torch.Tensor) -> float:
        hits, n = 0, 0
        for x, clean in self.batches(source):
            d = _delta_batch(delta, tuple(x.shape))
            hits += int(self.success(self.predict(self.perturbed(x, d)), clean).sum())
            n += x.shape[0]
        if n == 0:
            raise ValueError("the source yielded no images on this pass: pass a re-iterable source, not a generator.")
        return hits / n

    def _config(self) -> dict[str, Any]:
        return {"method": type(self).__name__, "lp": self.lp.value, "target": self.target, "zeta": self.zeta}

    def _write_checkpoint(
        self, path: Any, delta: torch.Tensor, eps: float, seed: int, curve: list[float], gen: torch.Generator
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "version": _CHECKPOINT_VERSION,
            **self._config(),
            "delta": delta[0].detach().cpu(),
            "eps": float(eps),
            "bounds": None if self.bounds is None else list(self.bounds),
            "seed": seed,
            "curve": list(curve),
            "converged": bool(curve[-1] >= self.target_rate),
            "generator_state": gen.get_state(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a crash mid-write leaves the previous pass's state intact

    def _read_checkpoint(self, path: Any) -> dict[str, Any]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"{str(path)!r} is not a UAP fitting checkpoint.")
        mine = self._config()
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"checkpoint {str(path)!r} was written by {theirs}, cannot resume {mine}.")
        if self.eps is not None and not math.isclose(self.eps, state["eps"], rel_tol=1e-6):
            raise ValueError(f"checkpoint {str(path)!r} has eps={state['eps']!r}, this fitter eps={self.eps!r}.")
        return state


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
        inner: ``"fgsm"`` (default; FGM for L2) or ``"deepfool"`` (non-targeted only; imported when used).
        step_size: the inner FGSM step, in model-input units (> 0); default ``eps / 10``. A full-budget step
            (``eps``) makes δ oscillate between passes; on PneumoniaMNIST ``eps / 10`` gave the higher rates.
        inner_steps: DeepFool's maximum iterations (>= 1).
        overshoot: DeepFool's overshoot (>= 0).
        kwargs: ``zeta``, ``lp``, ``bounds``, ``target``, ``max_passes``, ``target_rate``, ``batch_size``,
            ``progress``, ``summary_writer``, ``tag`` as in :class:`UniversalPerturbation`.

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
            from monai_robust.attacks.deepfool import DeepFool

            self._attack = DeepFool(
                self.network, lp=self.lp, bounds=self.bounds, num_steps=self.inner_steps,
                overshoot=self.overshoot,
            )
        else:
            from monai_robust.attacks.fgsm import FGSM

            step = eps / 10.0 if self.step_size is None else self.step_size
            self._attack = FGSM(self.network, step, lp=self.lp, bounds=self.bounds, targeted=self.target is not None)

    def fit_pass(self, source: Any, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for x, clean in self.batches(source, generator):
            d = _delta_batch(delta, tuple(x.shape))
            todo = ~self.success(self.predict(self.perturbed(x, d)), clean)
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
            ``progress``, ``summary_writer``, ``tag`` as in :class:`UniversalPerturbation` (``batch_size``
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
            d = _delta_batch(delta, tuple(x.shape)).detach().requires_grad_(True)
            labels = self.attack_labels(clean, x.shape[0])
            loss = self.loss(self.logits(self.perturbed(x, d)), labels)
            objective = (sign * loss.expand(x.shape[0]) if loss.ndim == 0 else sign * loss).clamp(max=self.beta)
            (grad,) = torch.autograd.grad(objective.mean(), d)
            delta = lp_project(d.detach() + self._step * lp_normalize(grad, self.lp), self._eps, self.lp)
        self._step *= self.step_decay
        return delta


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
            d = _delta_batch(d0, tuple(x.shape)).to(x)
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
    d = _delta_batch(delta, tuple(images.shape)).to(images)
    mask = (torch.rand(images.shape[0], generator=generator) < fraction).to(images.device)
    view = mask.reshape((-1,) + (1,) * (images.ndim - 1))
    return torch.where(view, clip_to_bounds(images + d, bounds), images), mask


@dataclass
class RetrainingReport:
    """What :func:`uap_adversarial_retraining` measured.

    Args:
        fooling_rate_before: rate (fooling, or targeted success for a targeted fitter) on the evaluation images of
            a UAP fitted on the original model.
        fooling_rate_after: the same for a UAP freshly fitted on the retrained model.
        round_rates: per round, the rate of the UAP used for fine-tuning, on its fitting images.
        clean_accuracy_before: accuracy on the evaluation images before retraining (when they have labels).
        clean_accuracy_after: the same after retraining.
        metric: ``"fooling_rate"`` or ``"targeted_success_rate"``.

    Example::

        >>> report = uap_adversarial_retraining(fitter, train, optimizer, eval_source=test)
        >>> report.fooling_rate_before - report.fooling_rate_after  # > 0: retraining helped
    """

    fooling_rate_before: float
    fooling_rate_after: float
    round_rates: list[float]
    clean_accuracy_before: float | None
    clean_accuracy_after: float | None
    metric: str = "fooling_rate"


def uap_adversarial_retraining(
    fitter: UniversalPerturbation,
    train_source: Any,
    optimizer: torch.optim.Optimizer,
    *,
    eval_source: Any,
    rounds: int = 3,
    epochs: int = 1,
    mix: float = 0.5,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> RetrainingReport:
    """Adversarial retraining against UAPs: rounds of "fit a UAP on the training images, then fine-tune on a mix of
    clean and UAP-perturbed training images (true labels kept)", reporting the rate of a freshly fitted UAP on the
    evaluation images before and after.

    Hirano, Minagi & Takemoto, "Universal adversarial attacks on deep neural networks for medical image
    classification", BMC Med Imaging 2021, https://doi.org/10.1186/s12880-020-00530-y (adversarial retraining).

    The model ``fitter.network`` is trained in place; its training flag is restored at the end. The fresh UAPs are
    fitted with ``fitter`` on ``train_source`` and measured with :func:`evaluate_uap` on ``eval_source``.

    Args:
        fitter: a configured :class:`IterativeUAP` or :class:`SGDUAP` holding the network.
        train_source: training images *with labels* (a ``{"image", "label"}`` mapping or a DataLoader of such
            batches / ``(image, label)`` tuples).
        optimizer: optimiser over the network's parameters.
        eval_source: held-out images (labels optional) for the before/after rates.
        rounds: fit/fine-tune rounds (>= 1).
        epochs: fine-tuning epochs per round (>= 1).
        mix: fraction of each training batch replaced by its UAP-perturbed version, in [0, 1].
        loss: ``loss(logits, labels)`` to minimise (mean over the batch); default cross-entropy.
        seed: seeds the choice of perturbed images.

    Returns:
        A :class:`RetrainingReport`.

    Raises:
        ValueError: When a training batch has no labels or an argument is out of range.

    Example::

        >>> fitter = SGDUAP(net, zeta=0.04, bounds=(0.0, 1.0), max_passes=5)
        >>> report = uap_adversarial_retraining(fitter, train, torch.optim.Adam(net.parameters(), 1e-4),
        ...                                     eval_source=test, rounds=3)
        >>> report.fooling_rate_before, report.fooling_rate_after
    """
    if not isinstance(fitter, UniversalPerturbation):
        raise ValueError(f"fitter must be an IterativeUAP or SGDUAP, got {type(fitter).__name__}.")
    rounds, epochs = _check_positive_int("rounds", rounds), _check_positive_int("epochs", epochs)
    if not (isinstance(mix, (int, float)) and 0 <= mix <= 1):
        raise ValueError(f"mix must lie in [0, 1], got mix={mix!r}.")
    loss_fn = loss or (lambda logits, y: default_loss(logits, y).mean())
    net = fitter.network
    param = next(net.parameters(), None)
    device = torch.device("cpu") if param is None else param.device
    gen = torch.Generator().manual_seed(int(seed))

    def fresh_rate() -> tuple[float, float | None]:
        res = fitter.fit(train_source)
        ev = evaluate_uap(net, res.delta, eval_source, bounds=fitter.bounds, target=fitter.target)
        return ev.get("targeted_success_rate", ev["fooling_rate"]), ev.get("clean_accuracy")

    rate_before, acc_before = fresh_rate()
    was_training, round_rates = net.training, []
    try:
        for _ in range(rounds):
            res = fitter.fit(train_source)
            round_rates.append(res.rate)
            net.train()
            for _ in range(epochs):
                for i, (x, y) in enumerate(iter_image_batches(train_source, fitter.batch_size, gen)):
                    if y is None:
                        raise ValueError(f"batch {i} of train_source has no labels: retraining needs labels.")
                    x, y = x.to(device), y.to(device)
                    mixed, _ = perturb_fraction(x, res.delta, mix, fitter.bounds, gen)
                    optimizer.zero_grad()
                    loss_fn(net(mixed), y).backward()
                    optimizer.step()
            net.eval()
    finally:
        net.train(was_training)
    rate_after, acc_after = fresh_rate()
    return RetrainingReport(rate_before, rate_after, round_rates, acc_before, acc_after, fitter.metric)
