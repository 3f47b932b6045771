# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``RobustnessEvaluator``: one pass over a test set that answers "how robust is my model?".

This module is the engine (plans in, one iteration per batch). Around it: :mod:`~monai_robust.engines.plans` (what is
run, and the options), :mod:`~monai_robust.engines.inputs` (input checks, UAPs, noise controls),
:mod:`~monai_robust.engines.recorder` and :mod:`~monai_robust.engines.accumulate` (per-sample MONAI ``Cumulative``
stores, counts, the merge over ranks), :mod:`~monai_robust.engines.results` (the results schema) and
:mod:`~monai_robust.engines.probes` (the model probes behind the validity checks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, convert_to_tensor, min_version, optional_import
from torch import nn

from monai_robust import __version__
from monai_robust.attacks.base import Attack, NonFiniteError, check_finite
from monai_robust.attacks.functional import clip_to_bounds, lp_norm
from monai_robust.attacks.threat import _check_bounds
from monai_robust.attacks.uap_sources import noise_control
from monai_robust.engines.accumulate import clock, distributed
from monai_robust.engines.events import RobustEvents
from monai_robust.engines.inputs import build_uaps, check_data_range, check_labels, noise_like
from monai_robust.engines.plans import AttackPlan, EvaluationOptions, build_plans
from monai_robust.engines.probes import ProbeOptions, gradient_probe, randomness_probe, unbounded_probe
from monai_robust.engines.recorder import RunRecorder
from monai_robust.engines.results import (
    ResultContext,
    build_results,
    flatten_metrics,
)
from monai_robust.metrics.perceptibility import summarize
from monai_robust.metrics.robustness import to_class_predictions
from monai_robust.metrics.validity import run_validity_checks
from monai_robust.report.table import key_label
from monai_robust.utils.enums import LpNorm
from monai_robust.utils.intensity import LinearIntensityMap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["EvaluationOptions", "ProbeOptions", "RobustnessEvaluator"]

logger = logging.getLogger(__name__)

Key = tuple[str, float]
"""``(name, eps)``: one attack at one budget (``inf``: unbounded), a UAP or a noise control."""


class RobustnessEvaluator(SupervisedEvaluator):
    """A MONAI ``SupervisedEvaluator`` that evaluates a classifier against every configured attack and ε in one pass,
    with clinical metrics, perceptibility, validity checks and report-ready results (:mod:`~monai_robust.engines.results`).

    Per batch: one clean forward; each bounded attack at each of its ε in increasing order
    (``attack(x, y, eps=e)``); each minimisation attack (CW, DeepFool) once, a sample counting as broken at ε when its
    adversarial lies within ε; each universal perturbation with a random control of the same norm (Hirano et al.
    2021); random noise of each white-box budget as a control. Results are keyed by ``(name, eps)``.

    * **Retiring samples** (``EvaluationOptions.reuse_smaller_eps``, default): a sample already wrong (clean, or at a
      smaller ε of the same attack) is not attacked again and counts as broken at every larger ε (exact for
      accuracy and attack success under "robust = no adversarial found within ε"; robust accuracy becomes
      non-increasing in ε). A retired sample keeps the logits it was retired with, so robust AUC is not that of
      each ε attacked independently; turn it off for that. It assumes a deterministic model (the randomness probe
      flags others).
    * **Early stop** (``EvaluationOptions.early_stop``, default): bounded attacks are called with
      ``early_stop=True`` (a sample is broken as soon as one iterate fools the model, as AutoAttack does).
    * **Seeding**: with ``seed``, every (attack, ε) has its own random stream seeded with it at the start of a run.
    * **Refused before time is spent**, on the first batch: data outside an attack's bounds (or covering under 5 %
      of them), labels out of the model's range, non-finite logits or gradients (:class:`NonFiniteError`, also on
      any later batch or attack, before any number is written), a multi-label target. An other exception in one
      attack is recorded and that attack skipped from then on.
    * **Data-parallel** (one evaluator per rank on its shard, e.g. ``DistributedSampler(even_divisible=False,
      shuffle=False)``): per-sample values are MONAI ``Cumulative`` stores gathered when the epoch completes, with one
      exchange of counts, failures and errors, so every rank's ``results`` cover each test image once. A
      ``DistributedDataParallel`` network is evaluated through its ``module`` (rank 0's buffers broadcast first).

    Args:
        device: the device of the network and batches.
        val_data_loader: the test data (any iterable of batches ``prepare_batch`` understands).
        network: the classifier, logits ``(N, classes)`` (one logit: a binary head thresholded at 0).
        attacks: ``{name: attack}``; an attack on another network is a transfer attack (a reference).
        eps: the ε list (model-input units) of every attack, or ``{name: [eps, ...]}``; default each bounded
            attack's own ``eps``; ``None``/``inf`` is the unbounded budget of a minimisation attack (its default).
        uaps: ``{name: δ}``: a ``(C, *spatial)`` tensor or a :class:`~monai_robust.attacks.universal.UAPResult`.
        detector: ``detector(images) -> (N,)`` scores, higher = more likely adversarial (AUC per attack and ε, with
            its ``n`` and interval, beside the 1 - max softmax baseline); or a calibrated guard (an object with
            ``detector``, ``threshold`` and ``calibration_report()``, e.g. a ``DetectorGuard``): its detector gives the
            scores, and its false-positive rate on the clean test images (which must not be those it was calibrated
            on) is reported with its exact interval in ``results["detector"]["guard"]``.
        reference_attacks: names in ``attacks`` that are gradient-free or transfer attacks (black-box attacks are).
        bounds: ``(low, high)`` of valid inputs for UAPs and noise; ``"auto"``: the attacks' (or a UAP's); ``None``.
        intensity_map: the data's model<->physical intensity map, for sizes in physical units.
        class_names, positive_class: names per class and the class whose sensitivity a binary task reports.
        options: :class:`~monai_robust.engines.plans.EvaluationOptions`.
        probe_options: :class:`~monai_robust.engines.probes.ProbeOptions`.
        seed: seeds every attack and the noise controls at the start of each run (``None``: unseeded).
        progress: a tqdm progress bar when tqdm is installed.
        amp: autocast the forward passes and the attacks' forwards (CUDA only). On a CPU the attacks keep their
            own ``amp`` (FGSM, BIM, PGD, APGD, AutoAttack: bf16 iterations checked in fp32 where the CPU has native
            bf16; ``MONAI_ROBUST_FP32=1`` forces fp32).
        val_handlers: attached after the handler that computes the results.
        engine_kwargs: ``epoch_length``, ``non_blocking``, ``prepare_batch``, ``inferer``, ``to_kwargs``,
            ``amp_kwargs`` as in MONAI's ``SupervisedEvaluator`` (always eval mode, no decollation).

    Raises:
        ValueError: On an invalid argument (the message quotes it), see also
            :func:`~monai_robust.engines.plans.build_plans`; on the first batch, the bad data listed above.

    Example::

        >>> evaluator = RobustnessEvaluator(
        ...     "cpu", test_loader, net,
        ...     attacks={"fgsm": FGSM(net, bounds=(0, 1)), "pgd": PGD(net, num_steps=10, bounds=(0, 1))},
        ...     eps=[1 / 255, 2 / 255, 4 / 255], val_handlers=[RobustnessReport("report/")],
        ... )
        >>> evaluator.run()
        >>> evaluator.results["attacks"]["pgd"]["results"][0]["accuracy"]
    """

    reraises_after_handlers = True
    """An exception is re-raised after the ``EXCEPTION_RAISED`` handlers ran (handlers need not raise it)."""

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: nn.Module,
        attacks: Mapping[str, Attack] | None = None,
        eps: Sequence[float | None] | Mapping[str, Sequence[float | None]] | None = None,
        *,
        uaps: Mapping[str, Any] | None = None,
        detector: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_attacks: Sequence[str] = (),
        bounds: tuple[float, float] | None | str = "auto",
        intensity_map: LinearIntensityMap | None = None,
        class_names: Sequence[str] | None = None,
        positive_class: int = 1,
        options: EvaluationOptions | None = None,
        probe_options: ProbeOptions | None = None,
        seed: int | None = 0,
        progress: bool = True,
        amp: bool = False,
        val_handlers: Sequence | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        ddp_buffers = isinstance(network, nn.parallel.DistributedDataParallel) and network.broadcast_buffers
        while isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        try:
            empty = len(val_data_loader) == 0  # type: ignore[arg-type]
        except TypeError:
            empty = False  # an iterable without a length: checked when the epoch ends
        if empty:
            shard = f" (rank {dist.get_rank()} of {dist.get_world_size()}: fewer test images than ranks?)" if distributed() else ""
            raise ValueError(f"val_data_loader is empty{shard}: there is nothing to evaluate.")
        if detector is not None and not callable(detector):
            raise ValueError(f"detector must be callable(images) -> (N,) scores, got {detector!r}.")
        if intensity_map is not None and not isinstance(intensity_map, LinearIntensityMap):
            raise ValueError(f"intensity_map must be a LinearIntensityMap, got {type(intensity_map).__name__}.")
        for name, value, kind in (("options", options, EvaluationOptions), ("probe_options", probe_options, ProbeOptions)):
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}.")
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            network=network,
            val_handlers=None,  # attached below, after the handler that computes the results
            amp=amp,
            event_names=[RobustEvents],
            decollate=False,
            **engine_kwargs,
        )
        self.options = options or EvaluationOptions()
        self.probe_options = probe_options or ProbeOptions()
        self.seed = seed
        self.progress = bool(progress)
        self.guard = detector if _is_guard(detector) else None
        self.detector = detector.detector if self.guard is not None else detector
        self.intensity_map = intensity_map
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.positive_class = int(positive_class)
        self.plans = build_plans(attacks or {}, eps, set(reference_attacks), network)
        self.uaps = build_uaps(uaps or {})
        self.bounds = self._resolve_bounds(bounds)
        self.results: dict[str, Any] = {}
        self._ddp_buffers = ddp_buffers
        self._reset_run()

        self.add_event_handler(Events.STARTED, self._on_started)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        self.add_event_handler(Events.COMPLETED, self._on_completed)
        if val_handlers:
            self._register_handlers(val_handlers)

    # ------------------------------------------------------------------------------------------ configuration
    def _resolve_bounds(self, bounds: Any) -> tuple[float, float] | None:
        if not (isinstance(bounds, str) and bounds == "auto"):
            return _check_bounds(bounds)
        found = {p.bounds for p in self.plans if p.bounds is not None}
        if len(found) > 1:
            raise ValueError(f"the attacks disagree on bounds {sorted(found)}: give bounds= explicitly.")
        if found:
            return found.pop()
        found = {u["bounds"] for u in self.uaps.values() if u["bounds"] is not None}
        return found.pop() if len(found) == 1 else None

    # ------------------------------------------------------------------------------------------ run state
    def _reset_run(self) -> None:
        self._run = RunRecorder(self.detector, self.options.num_examples, self.options.keep_images)
        self._probes: dict[str, Any] = {}
        self._first = True
        self._num_classes: int | None = None
        self._uap_controls: dict[str, torch.Tensor] = {}
        self._bar: Any = None

    @property
    def examples(self) -> dict[str, Any]:
        """The first batch's example panels: ``{"images", "labels", "clean_pred", "adversarial": {(name, eps):
        {"images", "pred", "attack", "eps", "lp", "bounds"}}, "class_names", "spatial_dims"}``."""
        return self._run.examples

    def _on_started(self, engine: Engine) -> None:
        self._reset_run()
        self.results = {}
        engine.state.robustness = {}  # never a previous run's numbers for this run's handlers
        if self._ddp_buffers and distributed():
            for buffer in self.network.buffers():  # as DDP's next forward would: BatchNorm statistics of rank 0
                dist.broadcast(buffer, src=0)
        for plan in self.plans:
            plan.failed.clear()
            plan.seed(self.seed)
        if self.progress and _has_tqdm:
            self._bar = tqdm(total=engine.state.epoch_length, desc="robustness", unit="batch", leave=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_epoch_completed(self, engine: Engine) -> None:
        self._close_bar()
        self._num_classes = self._run.sync(self.plans, self._num_classes)
        self.compute_results()

    def _on_completed(self, engine: Engine) -> None:
        if not self.results:
            self.compute_results()

    def _handle_exception(self, e: BaseException) -> None:
        """Keeps what was computed (``results`` with ``meta.complete = False``) for the ``EXCEPTION_RAISED``
        handlers (the report writes it), then always re-raises: an interrupted evaluation never looks complete. A
        :class:`NonFiniteError` leaves no results: numbers of a model with NaN/Inf outputs are not written."""
        self._close_bar()
        self._run.error("run", e)
        if not isinstance(e, NonFiniteError):
            try:
                self.compute_results()
            except Exception as inner:  # nothing computable yet (e.g. the first batch was refused)
                logger.debug("no partial results: %s", inner)
        if Events.EXCEPTION_RAISED in self._event_handlers:
            self._fire_event(Events.EXCEPTION_RAISED, e)
        raise e

    # ------------------------------------------------------------------------------------------ iteration
    def _iteration(self, engine: SupervisedEvaluator, batchdata: Any) -> dict:
        """Clean forward, then every attack, UAP and control on one batch. Returns ``engine.state.output``:
        ``{"image", "label", "pred" (clean logits), "adversarial": {(name, eps): {"pred", "image", "attack", "eps",
        "lp", "bounds"}}}``."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) != 2 and (batch[2] or batch[3]):
            raise ValueError("the robustness evaluator does not pass extra args/kwargs to the network.")
        x = convert_to_tensor(batch[0], track_meta=False)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                f"batch {engine.state.iteration} of val_data_loader holds no image (image shape {tuple(x.shape)}): "
                "drop empty batches before evaluating."
            )
        if not torch.is_floating_point(x):
            x = x.float()
        y = check_labels(batch[1], x.shape[0], self.state.device)
        logits = self._predict(x)
        if self._first:
            self._first_batch(x, y, logits)
        else:
            self._check_label_range(y, logits)
        correct = to_class_predictions(logits) == y
        self._run.clean.add(logits=logits.detach().float(), labels=y, score=self._run.score(x, "clean"))
        adversarial: dict[Key, Any] = {}
        out = {Keys.IMAGE: x, Keys.LABEL: y, Keys.PRED: logits, "adversarial": adversarial}
        engine.state.output = out
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if self._first:
            self._run.keep_examples(x, y, logits, self.class_names)
        for plan in self.plans:
            if plan.minimization:
                self._run_minimization(engine, plan, x, y, logits, correct, adversarial)
            else:
                self._run_bounded(engine, plan, x, y, logits, correct, adversarial)
        for name, u in self.uaps.items():
            self._run_uap(name, u, x, logits, adversarial)
        if self.options.noise_control:
            self._run_noise(x, y, correct, adversarial)
        self._first = False
        if self._bar is not None:
            self._bar.update(1)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out

    def _cuda_amp(self) -> bool:
        return self.amp and self.state.device is not None and self.state.device.type == "cuda"

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        with self.mode(self.network), torch.autocast("cuda", enabled=self._cuda_amp(), **self.amp_kwargs):
            out = self.inferer(x, self.network)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network must return logits (N, classes) with N={x.shape[0]}, got {shape}.")
        check_finite(out, "logits", "the evaluated network")
        return convert_to_tensor(out, track_meta=False).float()

    # ------------------------------------------------------------------------------------------ first batch
    def _first_batch(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        """Refuses bad input before the attacks run; then the controls' noise and the validity probes."""
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the first batch of images contains NaN/Inf values.")
        c = 2 if logits.shape[1] == 1 else int(logits.shape[1])
        self._num_classes = c
        self._check_label_range(y, logits)
        if self.class_names is not None and len(self.class_names) != c:
            raise ValueError(f"class_names has {len(self.class_names)} names for a model with {c} classes.")
        if not 0 <= self.positive_class < c:
            raise ValueError(f"positive_class={self.positive_class} is out of range for a model with {c} classes.")
        boxes = [(p.name, p.bounds) for p in self.plans if p.bounds is not None]
        boxes += [(f"uap:{n}", u["bounds"]) for n, u in self.uaps.items() if u["bounds"] is not None]
        boxes += [("bounds", self.bounds)] if self.bounds is not None else []
        check_data_range(x, boxes, self.options.check_data_range)
        for name, u in self.uaps.items():
            d = u["delta"][0] if u["delta"].ndim == x.ndim and u["delta"].shape[0] == 1 else u["delta"]
            if tuple(d.shape) != tuple(x.shape[1:]):
                raise ValueError(
                    f"UAP {name!r} of shape {tuple(u['delta'].shape)} does not match images of shape {tuple(x.shape)}: "
                    "expected (C, *spatial) or (1, C, *spatial)."
                )
            u["delta"] = d
        width = float(x.max()) - float(x.min())
        self._run.data_range = (self.bounds[1] - self.bounds[0]) if self.bounds is not None else max(width, 1e-12)
        gen = None if self.seed is None else torch.Generator(device="cpu").manual_seed(self.seed)
        for name, u in self.uaps.items():
            self._uap_controls[name] = noise_control(u["delta"].cpu(), "uniform", u["lp"], gen)
        self._noise_gen = torch.Generator(device=x.device)
        if self.seed is not None:
            self._noise_gen.manual_seed(self.seed)
        if self.probe_options.enabled:
            self._run_probes(x, y)

    def _check_label_range(self, y: torch.Tensor, logits: torch.Tensor) -> None:
        c = self._num_classes or 0
        bad = y[(y < 0) | (y >= c)]
        if bad.numel():
            raise ValueError(
                f"label {int(bad[0])} does not match the model's outputs: the model has {c} classes "
                f"(logits {tuple(logits.shape)}), labels must lie in [0, {c - 1}]."
            )

    def _run_probes(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Gradients, randomness and each white-box iterative attack at growing budgets, on the first samples."""
        k = min(self.probe_options.probe_size, x.shape[0])
        xs, ys = x[:k], y[:k]
        for name, fn in (
            ("randomness", lambda: randomness_probe(self.network, xs)),
            ("gradients", lambda: gradient_probe(self.network, xs, ys)),
        ):
            try:
                self._probes[name] = fn()
            except NonFiniteError:
                raise
            except Exception as e:
                self._probes[name] = {"error": f"{type(e).__name__}: {e}"}
        self._probes["unbounded"] = {
            plan.name: unbounded_probe(
                plan.attack, self._predict, xs, ys, plan.eps, self.probe_options.unbounded_accuracy, self.seed,
                **self._call_options(),
            )
            for plan in self.plans
            if plan.kind == "iterative" and not plan.reference
        }

    # ------------------------------------------------------------------------------------------ attacks
    def _call_options(self) -> dict[str, Any]:
        """The evaluator's overrides of a bounded attack's ``early_stop`` and ``amp`` (its own where ``None``)."""
        return {"early_stop": True if self.options.early_stop else None, "amp": True if self._cuda_amp() else None}

    def _craft(self, engine: Any, plan: AttackPlan, eps: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One call of the plan's attack, on its own random stream for this ε, between the attack events."""
        key = (plan.name, eps)
        if self._bar is not None:
            self._bar.set_postfix_str(key_label(*key), refresh=False)
        engine.state.attack_key = key
        engine.fire_event(RobustEvents.ATTACK_STARTED)
        if eps in plan.rng:
            plan.attack.set_random_state(state=plan.rng[eps])
        if plan.minimization:
            adv = plan.attack(x, y, amp=True if self._cuda_amp() else None)
        else:
            adv = plan.attack(x, y, eps=eps, **self._call_options())
        engine.fire_event(RobustEvents.ATTACK_COMPLETED)
        return adv

    def _run_bounded(
        self, engine: Any, plan: AttackPlan, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
        correct: torch.Tensor, adversarial: dict,
    ) -> None:
        reuse = self.options.reuse_smaller_eps
        broken = ~correct if reuse else torch.zeros_like(correct)
        adv_x, adv_logits = x.clone(), logits.clone()
        for eps in plan.eps:
            if eps in plan.failed:
                continue
            if not reuse:
                adv_x, adv_logits = x.clone(), logits.clone()
            idx = (~broken).nonzero().reshape(-1)
            t0 = clock()
            try:
                if idx.numel():
                    sub = self._craft(engine, plan, eps, x[idx], y[idx])
                    adv_x[idx], adv_logits[idx] = sub.to(adv_x.dtype), self._predict(sub)
            except NonFiniteError:
                raise
            except Exception as e:
                self._fail(plan, eps, e)
                continue
            tally = self._run.tally((plan.name, eps))
            tally.add_time(t0)
            tally.n_attacked += int(idx.numel())
            wrong = to_class_predictions(adv_logits) != y
            if reuse:
                broken = broken | wrong
            self._record((plan.name, eps), plan.lp, plan.bounds, x, adv_x, adv_logits, correct & wrong, adversarial)

    def _run_minimization(
        self, engine: Any, plan: AttackPlan, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
        correct: torch.Tensor, adversarial: dict,
    ) -> None:
        """A minimisation attack: crafted once; a sample counts as broken at ε when its adversarial is within ε."""
        if plan.failed:
            return
        idx = (correct if self.options.reuse_smaller_eps else torch.ones_like(correct)).nonzero().reshape(-1)
        t0 = clock()
        sub, sub_logits = x[idx], logits[idx]
        try:
            if idx.numel():
                sub = self._craft(engine, plan, plan.eps[-1], x[idx], y[idx]).to(x.dtype)
                sub_logits = self._predict(sub)
        except NonFiniteError:
            raise
        except Exception as e:
            for eps in plan.eps:
                self._fail(plan, eps, e)
            return
        self._run.tally((plan.name, plan.eps[-1])).add_progress(plan.attack.last_progress, int(idx.numel()))
        dist_ = lp_norm(sub - x[idx], plan.lp)
        fooled = to_class_predictions(sub_logits) != y[idx]
        for eps in plan.eps:
            ok = fooled & (dist_ <= eps * (1 + 1e-6)) if math.isfinite(eps) else fooled
            adv_x, adv_logits = x.clone(), logits.clone()
            take = idx[ok]
            adv_x[take], adv_logits[take] = sub[ok], sub_logits[ok]
            tally = self._run.tally((plan.name, eps))
            tally.add_time(t0, 1.0 / len(plan.eps))
            tally.n_attacked += int(idx.numel()) if eps == plan.eps[-1] else 0
            wrong = to_class_predictions(adv_logits) != y
            self._record((plan.name, eps), plan.lp, plan.bounds, x, adv_x, adv_logits, correct & wrong, adversarial)

    def _fail(self, plan: AttackPlan, eps: float, e: Exception) -> None:
        plan.failed[eps] = self._run.error(key_label(plan.name, eps), e)
        self._run.drop((plan.name, eps))
        logger.warning("attack %s failed and is skipped from now on: %s", key_label(plan.name, eps), plan.failed[eps])

    def _record(self, key: Key, lp: LpNorm, bounds: Any, x: torch.Tensor, adv: torch.Tensor, adv_logits: torch.Tensor,
                success: torch.Tensor, adversarial: dict) -> None:
        adversarial[key] = self._run.record(key, lp, bounds, x, adv, adv_logits, success, self._first)

    def _run_uap(self, name: str, u: dict[str, Any], x: torch.Tensor, logits: torch.Tensor, adversarial: dict) -> None:
        bounds = u["bounds"] if u["bounds"] is not None else self.bounds
        for tag, delta in ((f"uap:{name}", u["delta"]), (f"uap:{name}:control", self._uap_controls[name])):
            d = delta.to(x.device, x.dtype).reshape((1,) + tuple(x.shape[1:]))
            t0 = clock()
            adv = clip_to_bounds(x + d, bounds)
            adv_logits = self._predict(adv)
            key = (tag, u["eps"])
            tally = self._run.tally(key)
            tally.add_time(t0)
            tally.n_attacked += x.shape[0]
            changed = to_class_predictions(adv_logits) != to_class_predictions(logits)
            self._record(key, u["lp"], bounds, x, adv, adv_logits, changed, adversarial)

    def _run_noise(self, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, adversarial: dict) -> None:
        """Random noise of the same Lp norm as each white-box budget: sign noise at ``±eps`` (L-inf), a Gaussian
        direction of norm ``eps`` (L2) or a Laplace one (L1), clipped to the bounds."""
        done = set()
        for plan in self.plans:
            if plan.reference or plan.kind not in ("iterative", "single-step"):
                continue
            for eps in plan.eps:
                if (plan.lp, eps, plan.bounds) in done:
                    continue
                done.add((plan.lp, eps, plan.bounds))
                key = (f"noise:L{plan.lp.value}", eps)
                self._run.noise[key] = plan.lp.value
                t0 = clock()
                adv = clip_to_bounds(x + noise_like(x, eps, plan.lp, self._noise_gen), plan.bounds)
                adv_logits = self._predict(adv)
                tally = self._run.tally(key)
                tally.add_time(t0)
                tally.n_attacked += x.shape[0]
                wrong = to_class_predictions(adv_logits) != y
                self._record(key, plan.lp, plan.bounds, x, adv, adv_logits, correct & wrong, adversarial)

    # ------------------------------------------------------------------------------------------ results
    def compute_results(self) -> dict[str, Any]:
        """Every number of the run so far, as a JSON-ready dict (schema in :mod:`~monai_robust.engines.results`);
        also stored in ``self.results`` and ``engine.state.robustness``, and flattened into ``engine.state.metrics``
        (``"clean/accuracy"``, ``"pgd@0.0039216/accuracy"``, ...).

        Raises:
            ValueError: When no batch has been evaluated (an empty iterable loader).
        """
        if self._run.clean.n_local == 0:
            raise ValueError("no batch was evaluated: the data loader yielded nothing.")
        ctx = ResultContext(
            self._run.clean_values(), self.class_names, self.positive_class, self.intensity_map,
            self.detector is not None, self.guard,
        )
        results: dict[str, Any] = {"meta": self._meta(ctx)}
        results.update(build_results(ctx, self.plans, self._run.values, self._run.tallies, self._run.noise, self.uaps))
        results.update(
            detector=None, probes=dict(self._probes), errors=list(self._run.errors)
        )
        if self.detector is not None:
            finite = ctx.clean["score"][torch.isfinite(ctx.clean["score"])]
            results["detector"] = {
                "detector": type(self.detector).__name__ if isinstance(self.detector, nn.Module) else repr(self.detector),
                "clean_scores": summarize(finite),
                "error": self._run.detector_error,
                "guard": ctx.guard_report() if finite.numel() else None,
            }
        checks = run_validity_checks(results, self._probes, max_accuracy=self.probe_options.unbounded_accuracy)
        results["validity"] = [c.to_dict() for c in checks]
        self.results = results
        self.state.robustness = results
        self.state.metrics.update(flatten_metrics(results))
        return results

    def _meta(self, ctx: ResultContext) -> dict[str, Any]:
        wall, cpu = clock()
        return {
            "complete": self._run.complete,
            "n": int(ctx.clean["labels"].shape[0]),
            "num_classes": self._num_classes,
            "class_names": self.class_names,
            "positive_class": self.positive_class,
            "network": type(self.network).__name__,
            "device": str(self.state.device),
            "amp": self.amp,
            "reuse_smaller_eps": self.options.reuse_smaller_eps,
            "early_stop": self.options.early_stop,
            "seed": self.seed,
            "bounds": self.bounds,
            "intensity_map": None if self.intensity_map is None else self.intensity_map.to_dict(),
            "wall_time_s": wall - self._run.t0[0],
            "cpu_time_s": cpu - self._run.t0[1],
            "monai_robust_version": __version__,
            "auc_note": (
                "with reuse_smaller_eps=True a retired sample keeps the logits of the adversarial (or clean) input it "
                "was retired with; robust AUC is then not that of each eps attacked independently"
                if self.options.reuse_smaller_eps
                else ""
            ),
        }


def _is_guard(detector: Any) -> bool:
    """Whether ``detector`` is a calibrated guard (a ``DetectorGuard``-like object) rather than a score function."""
    return all(hasattr(detector, a) for a in ("detector", "threshold", "calibration_report"))
