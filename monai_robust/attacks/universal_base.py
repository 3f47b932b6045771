# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The base of the UAP fitters (:mod:`monai_robust.attacks.universal`): budget, reading the fitting images, the
fitting loop with its stopping rule (checked in fp32, within a pass once the running estimate of
:mod:`monai_robust.attacks.uap_stopping` says so), mixed-precision steps, checkpoints, progress and logging.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from monai.utils import optional_import
from torch import nn

from monai_robust.attacks.base import attack_mode
from monai_robust.attacks.fixed_perturbation import UAPResult, broadcast_delta
from monai_robust.attacks.functional import clip_to_bounds, lp_norm
from monai_robust.attacks.layout import channels_last
from monai_robust.attacks.precision import low_precision_dtype
from monai_robust.attacks.threat import (
    ThreatModel,
    _check_bounds,
    _check_eps,
    _check_positive,
    _check_positive_int,
    _unpack_threat,
)
from monai_robust.attacks.uap_stopping import RunningRate
from monai_robust.data.batches import iter_image_batches, split_batch
from monai_robust.metrics.robustness import to_class_predictions
from monai_robust.utils.enums import LpNorm, as_lp
from monai_robust.utils.files import atomic_torch_save, load_torch_file

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["UniversalPerturbation"]

_CHECKPOINT_VERSION = 1


def _num_classes(logits: torch.Tensor) -> int:
    return 2 if logits.shape[1] == 1 else int(logits.shape[1])


def _success(adv_pred: torch.Tensor, clean_pred: torch.Tensor, target: int | None) -> torch.Tensor:
    """Per-sample: prediction changed (non-targeted) or equals ``target``."""
    return adv_pred == target if target is not None else adv_pred != clean_pred


class UniversalPerturbation(Randomizable):
    """Base of the UAP fitters: budget, source reading, evaluation passes, checkpoints, progress and logging.

    Subclasses implement :meth:`fit_pass` (one pass over the fitting images that updates δ). :meth:`fit` runs
    passes until the rate on the fitting images reaches ``target_rate`` or ``max_passes`` is spent. The rate is the
    fooling rate (prediction differs from the clean prediction, Moosavi-Dezfooli et al. 2017) or, with ``target``,
    the targeted success rate (prediction equals ``target`` over all inputs, Hirano & Takemoto 2020); it is
    measured in fp32 after each pass, with δ fixed, by a separate forward-only pass (the per-pass curve). Within a
    pass, the fitters feed the predictions their steps make anyway to :meth:`observe`: once those reach
    ``target_rate`` over ``check_window`` images (:class:`~monai_robust.attacks.uap_stopping.RunningRate`), the
    exact fp32 rate on the fitting images is computed, and the fit stops there when it is reached (the last entry
    of the curve is then that of a partial pass).

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
        amp: run the fitter's gradient steps under autocast: ``None`` (default) where the hardware has native
            bf16 (a CPU with ``avx512_bf16``/``amx_bf16``, or CUDA with bf16;
            :func:`~monai_robust.attacks.precision.low_precision_dtype`), ``True`` always, ``False`` never
            (``MONAI_ROBUST_FP32=1`` forces fp32). Every rate (the stopping rule, the curve) is measured in fp32.
            On by default because the fitted δ is as strong: PneumoniaMNIST CNN, 1000 fitting images, ζ = 4 % L2,
            5 passes, seeds 0-2, SGDUAP and IterativeUAP, non-targeted and towards either class: mean test rate
            (624 images) of the bf16 fits within 0.001 of the fp32 fits in all six settings, 1.2-1.6x less CPU time.
        check_window: images of running minibatch predictions after which the stopping rate may be checked within
            a pass (>= 1); ``None`` checks it only after each pass.
        channels_last: run the network channels-last during the fit (:func:`~monai_robust.attacks.layout.channels_last`:
            its parameters are given back afterwards); ``None`` (default): for 2D images on a CPU, where it measured
            1.3-2x faster (:mod:`~monai_robust.attacks.layout`), not for 3D volumes (no gain measured on a 3D
            ``SmallCNN``) nor on a GPU (not measured).

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
        amp: bool | None = None,
        check_window: int | None = 256,
        channels_last: bool | None = None,
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
        if amp is not None and not isinstance(amp, bool):
            raise ValueError(f"amp must be True, False or None, got amp={amp!r}.")
        self.amp = amp
        self.check_window = None if check_window is None else _check_positive_int("check_window", check_window)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True, False or None, got channels_last={channels_last!r}.")
        self.channels_last = channels_last
        self._format: torch.memory_format | None = None
        self._precision: torch.dtype | None = None
        self._checked = False
        self._cache: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None

    amp_by_default: bool = True
    """True where ``amp=None`` means autocast on hardware with native bf16 (CPU or CUDA)."""

    check_margin: float = 0.0
    """The running estimate triggers the exact check at ``target_rate - check_margin`` (it lags behind δ)."""

    @property
    def metric(self) -> str:
        """``"targeted_success_rate"`` when ``target`` is set, else ``"fooling_rate"``."""
        return "fooling_rate" if self.target is None else "targeted_success_rate"

    def randomize(self, data: Any = None) -> None:
        """The seed of each fit comes from ``self.R``; nothing to pre-draw."""

    def __repr__(self) -> str:
        keys = ("eps", "zeta", "lp", "bounds", "target", "max_passes", "target_rate", "batch_size", "amp", "check_window",
                "channels_last")
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
                :func:`~monai_robust.data.batches.iter_image_batches`); medical or natural images.
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
        self._precision = low_precision_dtype(False if self.amp is None and not self.amp_by_default else self.amp,
                                              self._device)
        self._checked = False
        state = self._read_checkpoint(checkpoint) if resume and Path(checkpoint).is_file() else None
        try:
            with attack_mode(self.network):
                shape = self._prepare(source)
                with channels_last(self.network, len(shape) if self._use_channels_last(shape) else 0) as self._format:
                    return self._fit(source, shape, reference, checkpoint, state)
        finally:
            self._cache, self._format = None, None  # the fitting images and their clean predictions are not kept

    def _fit(
        self, source: Any, shape: tuple[int, ...], reference: Any, checkpoint: Any, state: dict[str, Any] | None
    ) -> UAPResult:
        if self.target is None and self._cache is not None:  # the model is fixed during a fit: predict once
            clean = torch.cat([self.predict(x) for x, _ in self.batches(source, chunk=self._eval_chunk())])
            self._cache = (*self._cache[:2], clean)
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
            delta = broadcast_delta(state["delta"], shape).to(self._device, self._dtype)
        self._eps = eps
        self._running = None if self.check_window is None else RunningRate(self.target_rate, self.check_window,
                                                                            self.check_margin)
        self._reached: tuple[torch.Tensor, float] | None = None
        self._start_fit(eps, len(curve))
        bar = tqdm(total=self.max_passes, initial=len(curve), desc=type(self).__name__) if self._bar() else None
        try:
            while len(curve) < self.max_passes and not (curve and curve[-1] >= self.target_rate):
                delta = self.fit_pass(source, delta, generator)
                reached, self._reached = self._reached, None
                curve.append(reached[1] if reached is not None and reached[0] is delta else self._rate(source, delta))
                delta = delta.detach()
                if self.summary_writer is not None:
                    self.summary_writer.add_scalar(f"{self.tag}/{self.metric}", curve[-1], len(curve))
                if self._running is not None:
                    self._running.checked()
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
        self, source: Any, generator: torch.Generator | None = None, chunk: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The fitting images batch by batch on the model's device, with their clean predictions ``(N,)`` for a
        non-targeted fitter (``None`` for a targeted one, which does not need them). A tensor or mapping source is
        shuffled by ``generator`` (in order without one, in batches of ``chunk`` when given) and its clean
        predictions are computed once per fit; other sources are iterated as they are (their own shuffling) and
        predicted batch by batch."""
        if self._cache is not None and self._cache[0] is source:
            _, x_all, clean_all = self._cache
            n, size = x_all.shape[0], chunk or self.batch_size
            if generator is None:  # in order: slices, no gather
                for i in range(0, n, size):
                    clean = None if clean_all is None else clean_all[i : i + size]
                    yield self._to_model(x_all[i : i + size]), clean
                return
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, size):
                idx = order[i : i + size]
                x = self._to_model(x_all[idx.to(x_all.device)])
                yield x, (None if clean_all is None else clean_all[idx.to(clean_all.device)])
            return
        for x, _ in iter_image_batches(source, self.batch_size, generator):
            if x.shape[0] == 0:
                continue
            x = self._check_batch(x)
            yield x, (self.predict(x) if self.target is None else None)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class predictions ``(N,)`` in fp32 without gradient; checks the output and ``target`` on the first call."""
        with torch.no_grad(), torch.autocast(self._device.type, enabled=False):
            return to_class_predictions(self.logits(x))

    def mixed(self) -> contextlib.AbstractContextManager:
        """The autocast of this fit's gradient steps (``amp``); a no-op in fp32."""
        if self._precision is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=self._precision)

    def observe(self, source: Any, delta: torch.Tensor, success: torch.Tensor) -> bool:
        """Records a minibatch's per-sample success ``(n,)`` at ``delta`` (as the step predicted it) and says
        whether the fit has reached ``target_rate``, checked exactly: in fp32 on all the fitting images, once the
        running estimate says it may have. On True, ``fit_pass`` should return ``delta`` (this very tensor) at once."""
        if self._running is None or not self._running.update(int(success.sum()), int(success.numel())):
            return False
        rate = self._rate(source, delta, self.target_rate)
        if rate is None or rate < self.target_rate:
            self._running.checked()
            return False
        self._reached = (delta, rate)
        return True

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
        return self._to_model(x)

    def _use_channels_last(self, shape: tuple[int, ...]) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return self._device.type == "cpu" and len(shape) == 4

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Images on the model's device, in its dtype and in the fit's memory layout."""
        return x.to(self._device, self._dtype, memory_format=self._format or torch.preserve_format)

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
        checked once and cached."""
        if isinstance(source, (torch.Tensor, np.ndarray)) or (isinstance(source, Mapping) and "image" in source):
            x_all, _ = split_batch(source, "source")
            if x_all.shape[0] == 0:
                raise ValueError("the source holds no images: a universal perturbation needs fitting images.")
            for i in range(0, x_all.shape[0], 4096):
                self._check_values(x_all[i : i + 4096])
            self._cache = (source, x_all, None)  # the clean predictions come in _fit, in the fit's layout
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

    def _rate(self, source: Any, delta: torch.Tensor, at_least: float | None = None) -> float | None:
        """The exact (fp32) rate of ``delta`` on the fitting images; with ``at_least``, None as soon as the images
        left cannot lift it to ``at_least`` (a tensor source, whose size is known)."""
        cached = self._cache is not None and self._cache[0] is source
        total = self._cache[1].shape[0] if cached else None
        hits, n = 0, 0
        for x, clean in self.batches(source, chunk=self._eval_chunk() if cached else None):
            d = broadcast_delta(delta.detach(), tuple(x.shape))
            hits += int(self.success(self.predict(self.perturbed(x, d)), clean).sum())
            n += x.shape[0]
            if at_least is not None and total is not None and hits + (total - n) < at_least * total:
                return None
        if n == 0:
            raise ValueError("the source yielded no images on this pass: pass a re-iterable source, not a generator.")
        return hits / n

    def _eval_chunk(self) -> int:
        """Images per forward of a rate check: up to 128 (2**21 input values at most), at least ``batch_size``."""
        per_image = max(1, math.prod(self._cache[1].shape[1:]))
        return max(self.batch_size, min(128, (1 << 21) // per_image))

    def _config(self) -> dict[str, Any]:
        return {"method": type(self).__name__, "lp": self.lp.value, "target": self.target, "zeta": self.zeta}

    def _write_checkpoint(
        self, path: Any, delta: torch.Tensor, eps: float, seed: int, curve: list[float], gen: torch.Generator
    ) -> None:
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
        atomic_torch_save(state, path)  # a crash mid-write leaves the previous pass's state intact

    def _read_checkpoint(self, path: Any) -> dict[str, Any]:
        state = load_torch_file(path, "UAP fitting checkpoint")
        if not isinstance(state, dict) or state.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"{str(path)!r} is not a UAP fitting checkpoint.")
        mine = self._config()
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"checkpoint {str(path)!r} was written by {theirs}, cannot resume {mine}.")
        if self.eps is not None and not math.isclose(self.eps, state["eps"], rel_tol=1e-6):
            raise ValueError(f"checkpoint {str(path)!r} has eps={state['eps']!r}, this fitter eps={self.eps!r}.")
        return state
