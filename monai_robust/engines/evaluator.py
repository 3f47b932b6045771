# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``RobustnessEvaluator``: one pass over a test set that answers "how robust is my model?".

Per batch: one clean forward; then every configured attack at every ε (smallest first), every fitted universal
perturbation and its random control, and random noise of the same norm as each white-box budget; per-attack
predictions go to accumulators. At the end of the epoch: clinical metrics (accuracy, ROC AUC, sensitivity,
specificity, per class) clean and under each attack, attack success rate, performance retained, UAP fooling and
targeted success rates, detector AUC, perceptibility, and the validity checks of
:mod:`monai_robust.metrics.validity`. Handlers in :mod:`monai_robust.handlers` write the JSON/HTML report and
TensorBoard records.

Data-parallel runs (``torch.distributed`` initialised, one evaluator per rank on its shard of the test set, e.g.
through ``monai.data.DistributedSampler(even_divisible=False, shuffle=False)``) gather every rank's per-sample
values, counts and errors once, when the epoch completes, so every rank's results (and the report of rank 0)
cover each test image exactly once.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.metrics import compute_roc_auc
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, convert_to_tensor, min_version, optional_import
from torch import nn

from monai_robust.attacks.base import Attack, _check_bounds
from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.fixed_perturbation import noise_control
from monai_robust.attacks.functional import clip_to_bounds, lp_norm
from monai_robust.engines.events import RobustEvents
from monai_robust.metrics.clinical import clinical_metrics
from monai_robust.metrics.perceptibility import perturbation_norms, psnr, ssim, summarize
from monai_robust.metrics.robustness import (
    attack_success_rate,
    fooling_rate,
    performance_retained,
    targeted_success_rate,
    to_class_predictions,
)
from monai_robust.metrics.universal import per_class_fooling_rate
from monai_robust.metrics.validity import gradient_probe, randomness_probe, run_validity_checks
from monai_robust.utils.enums import LpNorm, as_lp
from monai_robust.utils.intensity import LinearIntensityMap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["AttackSpec", "RobustnessEvaluator", "eps_key"]

logger = logging.getLogger(__name__)

AttackSpec = Attack | Callable[..., Attack]
"""An :class:`~monai_robust.attacks.base.Attack` (run at its own ``eps``) or a factory called as ``factory(eps=e)``
for each ε, e.g. ``functools.partial(PGD, network, num_steps=10, bounds=(0, 1))``."""

_EXAMPLE_KEYS = ("images", "labels", "clean_pred")


def eps_key(name: str, eps: float | None) -> str:
    """The key of one attack at one ε in ``engine.state.output["adversarial"]`` and ``engine.state.metrics``.

    Example::

        >>> eps_key("pgd", 0.0039215)
        'pgd@0.0039215'
    """
    return f"{name}@{'inf' if eps is None or math.isinf(eps) else f'{eps:.8g}'}"


def _eps_value(eps: Any) -> float | None:
    """``None``/``inf`` -> ``None`` (no budget); otherwise a finite float >= 0 (one-element tensors and arrays too)."""
    if isinstance(eps, torch.Tensor) and eps.numel() == 1:
        eps = float(eps)
    elif isinstance(eps, (np.ndarray, np.generic)) and eps.size == 1:
        eps = float(eps)
    if eps is None or (isinstance(eps, (int, float)) and math.isinf(eps) and eps > 0):
        return None
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps values must be finite numbers >= 0 (or None/inf for no budget), got {eps!r}.")
    return float(eps)


def _kind(attack: Attack) -> str:
    """``"single-step"`` (FGSM, one-step PGD), ``"iterative"``, ``"minimal"`` (CW, DeepFool) or ``"other"``."""
    if getattr(attack, "unbounded_eps", False):
        return "minimal"
    if isinstance(attack, FGSM) or getattr(attack, "num_steps", None) == 1:
        return "single-step"
    if isinstance(getattr(attack, "num_steps", None), int) and attack.num_steps > 1:
        return "iterative"
    return "other"


@dataclass
class _Plan:
    """One configured attack: its per-ε instances and how it is run."""

    name: str
    attacks: list[tuple[float | None, Attack]]
    lp: LpNorm
    bounds: tuple[float, float] | None
    kind: str
    reference: bool
    single_run: bool  # a minimal-perturbation attack: crafted once, thresholded at every eps
    factory: Callable[..., Attack] | None
    description: str
    failed: dict[float | None, str] = field(default_factory=dict)

    @property
    def eps_list(self) -> list[float | None]:
        return [e for e, _ in self.attacks]


class _Store:
    """Per-sample tensors of this process, concatenated on request. Unlike MONAI's ``Cumulative`` it never
    communicates: a data-parallel evaluator gathers every rank's stores once, when the epoch completes
    (``RobustnessEvaluator._gather_ranks``), so partial results of a failing rank never wait in a collective."""

    def __init__(self) -> None:
        self._parts: list[tuple[torch.Tensor, ...]] = []
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(self, *data: torch.Tensor) -> None:
        self._parts.append(tuple(data))
        self._n += int(data[0].shape[0])

    def get_buffer(self) -> list[torch.Tensor]:
        return [torch.cat(column) for column in zip(*self._parts)]

    def replace(self, data: Sequence[torch.Tensor]) -> None:
        self._parts = [tuple(data)]
        self._n = int(data[0].shape[0])


class _Buffer:
    """Per-sample values of one (attack, ε) across batches."""

    FIELDS = ("logits", "norm", "linf", "l2", "psnr", "ssim", "score", "out_of_bounds")

    def __init__(self) -> None:
        self.data = _Store()
        self.n_attacked = 0
        self.time_s = 0.0
        self.cpu_time_s = 0.0
        self.batches = 0

    def add_time(self, start: tuple[float, float], share: float = 1.0) -> None:
        """Adds ``share`` of the wall and process-CPU seconds since ``start`` (from :func:`_clock`)."""
        wall, cpu = _clock()
        self.time_s += (wall - start[0]) * share
        self.cpu_time_s += (cpu - start[1]) * share

    def extend(self, **values: torch.Tensor) -> None:
        self.data.extend(*(values[k].detach().float().cpu().clone() for k in self.FIELDS))  # callers reuse them
        self.batches += 1

    def get(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.FIELDS, self.data.get_buffer()))


class RobustnessEvaluator(SupervisedEvaluator):
    """A MONAI ``SupervisedEvaluator`` that evaluates a classifier's robustness to every configured attack and ε in
    one pass over the data, with clinical metrics, perceptibility, validity checks and report-ready results.

    Per batch it computes the clean prediction once, then, for each attack and each ε in increasing order, crafts
    adversarial inputs (with gradients on, although MONAI runs the evaluator's forward under ``no_grad``: attacks
    enable them in :func:`~monai_robust.attacks.base.attack_mode`), predicts them and hands the predictions to
    per-(attack, ε) accumulators. Fitted universal perturbations are applied with a random control of the same
    norm (Hirano et al. 2021), and random noise of the same norm as each white-box budget is evaluated as a control.

    **Retiring samples** (``reuse_smaller_eps=True``): the threat models of one attack at ε₁ < ε₂ (same Lp, same
    bounds) are nested, so an adversarial example found at ε₁ is also one at ε₂. A sample the model already gets
    wrong (clean, or at a smaller ε of the same attack) is then not attacked again: it counts as broken at every
    larger ε, with the prediction of the adversarial it was retired with. This is exact for the decision-based
    numbers under the standard definition "robust at ε = no adversarial example found within ε" (accuracy,
    sensitivity, attack success rate; Carlini et al. 2019), and can only lower robust accuracy compared with
    running each ε independently (an attack that fails at ε₂ where it succeeded at ε₁ is not monotone). It makes
    robust accuracy non-increasing in ε by construction. For ROC AUC, a retired sample keeps the logits of its
    earlier adversarial (or clean) input, not those the attack at the larger ε would have reached: set
    ``reuse_smaller_eps=False`` for the AUC of each ε attacked independently on every sample. Retiring assumes a
    deterministic model (an adversarial of a randomised model fools it only some of the time; the randomness
    probe flags such models) and nested budgets (attacks of one name must share Lp and bounds).

    **Minimal-perturbation attacks** (``CW``, ``DeepFool``: ``attack.unbounded_eps``): their search does not depend
    on ε unless ``early_stop`` is set, so each is run once at the largest ε (or unbounded) and a sample counts as
    broken at ε when its adversarial is within ε. This is exact.

    **Early stop** (``early_stop=True``): copies of the bounded attacks are run with ``early_stop=True``: a sample
    counts as broken as soon as one iterate fools the model (AutoAttack's practice) and is no longer forwarded.
    Robust accuracy is then at most that of the attack as configured.

    Bad input is refused on the first batch, before time is spent: data outside an attack's ``bounds`` (or covering
    under 5 % of them: likely a units mismatch), labels out of the model's range, a model returning NaN/Inf, a
    multi-label target; an empty loader is refused at construction. An exception in one attack is recorded with
    its message and the attack skipped from then on; every other result is kept.

    **Data-parallel** (``torch.distributed`` initialised, world size > 1, each rank evaluating its own shard, e.g.
    through ``monai.data.DistributedSampler(dataset, even_divisible=False, shuffle=False)``: a sampler that pads
    shards would count padded images twice): when the epoch completes, every rank's per-sample values, attack
    counts, times and errors are gathered (one ``all_gather_object``), so each rank's ``results`` cover the whole
    test set; an attack that failed on one rank is failed everywhere. The validity probes and example panels are
    those of each rank's first batch. A ``DistributedDataParallel`` network (and attack network) is evaluated
    through its ``module``, with rank 0's buffers (BatchNorm statistics) broadcast when the run starts, as DDP's
    next forward would do: evaluation needs no gradient synchronisation, and DDP's collectives would block when
    ranks run different numbers of attack steps (early stop, retired samples, uneven shards).

    Args:
        device: the device of the network and batches.
        val_data_loader: the test data (any iterable of batches ``prepare_batch`` understands).
        network: the classifier, logits ``(N, classes)`` (``classes = 1``: binary head thresholded at 0); a
            ``DistributedDataParallel`` wrapper is evaluated through its ``module``.
        attacks: ``{name: attack or factory}``; a factory is called as ``factory(eps=e)`` for each ε in ``eps``.
            An attack whose ``network`` is not ``network`` is a transfer attack and counts as a reference.
        eps: the ε list (model-input units) of every factory, or ``{name: [eps, ...]}`` per factory. ``None`` or
            ``inf`` is the unbounded budget of a minimal-perturbation attack.
        uaps: ``{name: δ}`` fitted universal perturbations: a ``(C, *spatial)`` tensor or a
            :class:`~monai_robust.attacks.fixed_perturbation.UAPResult` (its ``target`` gives the targeted success rate).
        detector: ``detector(images) -> (N,)`` scores, higher = more likely adversarial; its ROC AUC separating the
            clean test images from the successful adversarial examples is reported per attack and ε.
        reference_attacks: names in ``attacks`` that are gradient-free or transfer attacks (validity check).
        bounds: ``(low, high)`` of valid inputs for the UAPs and noise controls; ``"auto"`` takes the attacks'
            bounds (then they must agree) or a UAP's; ``None`` for no box.
        intensity_map: the data's model<->physical intensity map, for perturbation sizes in physical units.
        class_names: a name per class, for the report.
        positive_class: the class whose sensitivity is reported for a binary task (default 1).
        reuse_smaller_eps: retire samples already broken (see above).
        early_stop: run bounded attacks with ``early_stop=True`` (see above); ``False`` runs them as configured.
        noise_control: evaluate random noise of each white-box (Lp, ε) as a control.
        validity_probes: on the first batch, probe input gradients, randomness of the model and each iterative
            attack factory at an unbounded budget.
        probe_size: samples of the first batch used by the probes.
        unbounded_accuracy: the accuracy an unbounded budget must reach ("about 0") for the validity check; the
            probe tries 4, 16 and 64 times the largest ε, then the whole data range, until one gets there.
        check_data_range: refuse data covering under 5 % of the attacks' bounds (units mismatch).
        num_examples: samples of the first batch kept (CPU, middle slice for 3D) for the report's example panels.
        keep_images: put the adversarial images in ``engine.state.output["adversarial"][key]["image"]`` for
            handlers (TensorBoard images, perturbation statistics).
        seed: seeds every attack (``set_random_state``) and the noise controls at the start of each run.
        progress: show a tqdm progress bar (batches, with the attack being run) when tqdm is installed.
        amp: autocast the forward passes and the attacks' forwards (CUDA only, as MONAI's ``amp``).
        epoch_length, non_blocking, prepare_batch, inferer, val_handlers, to_kwargs, amp_kwargs: as in MONAI's
            ``SupervisedEvaluator`` (the inferer makes the clean and adversarial predictions; attacks call the
            network directly). The evaluator always runs in eval mode without decollation.

    Raises:
        ValueError: When an argument is invalid (the message quotes it): an empty loader, an attack that is neither
            an ``Attack`` nor a factory, a factory without ε, an ε list given for an instance, a targeted attack,
            attacks of one name that disagree on Lp or bounds, an L-inf ε larger than the bounds, an unknown name in
            ``reference_attacks``; on the first batch, the bad data listed above.

    Example::

        >>> from functools import partial
        >>> from monai_robust.attacks.fgsm import FGSM
        >>> from monai_robust.attacks.pgd import PGD
        >>> from monai_robust.handlers.report import RobustnessReport
        >>> evaluator = RobustnessEvaluator(
        ...     "cpu", test_loader, net,
        ...     attacks={"fgsm": partial(FGSM, net, bounds=(0, 1)), "pgd": partial(PGD, net, num_steps=10, bounds=(0, 1))},
        ...     eps=[1 / 255, 2 / 255, 4 / 255],
        ...     val_handlers=[RobustnessReport("report/")],
        ... )
        >>> evaluator.run()
        >>> evaluator.results["attacks"]["pgd"]["results"][0]["accuracy"]

    See also:
        :class:`~monai_robust.handlers.report.RobustnessReport`,
        :class:`~monai_robust.handlers.tensorboard_images.RobustnessTensorBoard`,
        :mod:`monai_robust.metrics.validity`.
    """

    reraises_after_handlers = True
    """An exception is re-raised after the ``EXCEPTION_RAISED`` handlers ran (handlers need not raise it)."""

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: nn.Module,
        attacks: Mapping[str, AttackSpec] | None = None,
        eps: Sequence[float | None] | Mapping[str, Sequence[float | None]] | None = None,
        *,
        uaps: Mapping[str, Any] | None = None,
        detector: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_attacks: Sequence[str] = (),
        bounds: tuple[float, float] | None | str = "auto",
        intensity_map: LinearIntensityMap | None = None,
        class_names: Sequence[str] | None = None,
        positive_class: int = 1,
        reuse_smaller_eps: bool = True,
        early_stop: bool = True,
        noise_control: bool = True,
        validity_probes: bool = True,
        probe_size: int = 32,
        unbounded_accuracy: float = 0.05,
        check_data_range: bool = True,
        num_examples: int = 4,
        keep_images: bool = True,
        seed: int | None = 0,
        progress: bool = True,
        amp: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        inferer: Any = None,
        val_handlers: Sequence | None = None,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        ddp_buffers = isinstance(network, nn.parallel.DistributedDataParallel) and network.broadcast_buffers
        network = _unwrap_ddp(network)
        try:
            empty = len(val_data_loader) == 0  # type: ignore[arg-type]
        except TypeError:
            empty = False  # an iterable without a length: checked when the epoch ends
        if empty:
            shard = ""
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                shard = f" (rank {dist.get_rank()} of {dist.get_world_size()}: fewer test images than ranks?)"
            raise ValueError(f"val_data_loader is empty{shard}: there is nothing to evaluate.")
        if detector is not None and not callable(detector):
            raise ValueError(f"detector must be callable(images) -> (N,) scores, got {detector!r}.")
        if intensity_map is not None and not isinstance(intensity_map, LinearIntensityMap):
            raise ValueError(f"intensity_map must be a LinearIntensityMap, got {type(intensity_map).__name__}.")
        for name, value in (("num_examples", num_examples), ("probe_size", probe_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_examples" else 1):
                raise ValueError(f"{name} must be a non-negative integer (probe_size >= 1), got {name}={value!r}.")
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            network=network,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            inferer=inferer,
            val_handlers=None,  # attached below, after the handler that computes the results
            amp=amp,
            event_names=[RobustEvents],
            decollate=False,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.reuse_smaller_eps = bool(reuse_smaller_eps)
        self.early_stop = bool(early_stop)
        self.noise_control = bool(noise_control)
        self.validity_probes = bool(validity_probes)
        self.probe_size = probe_size
        if not (isinstance(unbounded_accuracy, (int, float)) and 0 <= unbounded_accuracy < 1):
            raise ValueError(f"unbounded_accuracy must lie in [0, 1), got unbounded_accuracy={unbounded_accuracy!r}.")
        self.unbounded_accuracy = float(unbounded_accuracy)
        self.check_data_range = bool(check_data_range)
        self.num_examples = num_examples
        self.keep_images = bool(keep_images)
        self.seed = seed
        self.progress = bool(progress)
        self.detector = detector
        self.intensity_map = intensity_map
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.positive_class = int(positive_class)
        self.plans = self._build_plans(attacks or {}, eps, set(reference_attacks))
        self.uaps = self._build_uaps(uaps or {})
        self.bounds = self._resolve_bounds(bounds)
        self.results: dict[str, Any] = {}
        self.examples: dict[str, Any] = {}
        self._ddp_buffers = ddp_buffers
        self._reset_run()

        self.add_event_handler(Events.STARTED, self._on_started)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        self.add_event_handler(Events.COMPLETED, self._on_completed)
        if val_handlers:
            self._register_handlers(val_handlers)

    # ------------------------------------------------------------------------------------------ configuration
    def _build_plans(
        self, attacks: Mapping[str, AttackSpec], eps: Any, references: set[str]
    ) -> list[_Plan]:
        unknown = references - set(attacks)
        if unknown:
            raise ValueError(f"reference_attacks names {sorted(unknown)} that are not in attacks {sorted(attacks)}.")
        if isinstance(eps, Mapping):
            extra = set(eps) - set(attacks)
            if extra:
                raise ValueError(f"eps is given for {sorted(extra)}, which are not in attacks {sorted(attacks)}.")
        plans = []
        for name, spec in attacks.items():
            if not isinstance(name, str) or not name or "@" in name or name.startswith(("uap:", "noise:", "clean")):
                raise ValueError(f"attack names must be non-empty strings without '@' or a reserved prefix, got {name!r}.")
            own_eps = eps.get(name) if isinstance(eps, Mapping) else eps
            if isinstance(spec, Attack):
                if isinstance(eps, Mapping) and name in eps:
                    raise ValueError(
                        f"attack {name!r} is an Attack instance with its own eps={spec.eps!r}; give a factory "
                        "(e.g. functools.partial(PGD, network, ...)) to run it at several eps."
                    )
                made = [(_eps_value(spec.eps), spec)]
                factory = None
            elif callable(spec):
                if own_eps is None:
                    raise ValueError(f"attack {name!r} is a factory: give its eps list (eps=[...] or eps={{{name!r}: [...]}}).")
                single_value = own_eps is None or isinstance(own_eps, (int, float)) or getattr(own_eps, "ndim", 1) == 0
                values = [_eps_value(e) for e in ([own_eps] if single_value else list(own_eps))]
                if not values:
                    raise ValueError(f"the eps list of attack {name!r} is empty.")
                if len({(v is None, v) for v in values}) != len(values):
                    raise ValueError(f"the eps list of attack {name!r} has duplicates: {list(own_eps)!r}.")
                factory = spec
                made = [(v, self._make(name, spec, v)) for v in values]
            else:
                raise ValueError(f"attack {name!r} must be an Attack or a factory(eps=...) -> Attack, got {spec!r}.")
            made.sort(key=lambda t: math.inf if t[0] is None else t[0])
            first = made[0][1]
            for _, a in made:
                if a.targeted:
                    raise ValueError(
                        f"attack {name!r} is targeted; the evaluator measures untargeted robustness (targeted "
                        "universal perturbations are given through uaps=)."
                    )
                if a.lp != first.lp or a.bounds != first.bounds:
                    raise ValueError(f"the attacks of {name!r} disagree on lp or bounds: {first!r} vs {a!r}.")
                if a.lp == LpNorm.LINF and a.bounds is not None and a.eps is not None and math.isfinite(a.eps):
                    width = a.bounds[1] - a.bounds[0]
                    if a.eps > width:
                        raise ValueError(
                            f"attack {name!r} has L-inf eps={a.eps:g} larger than its bounds {a.bounds} allow "
                            f"(width {width:g}): give eps in model-input units (e.g. 8/255, not 8)."
                        )
            kind = _kind(first)
            single = kind == "minimal" and not first.early_stop
            if single:  # one run at the largest budget (None = unbounded sorts last) serves every eps
                made = [(e, made[-1][1]) for e, _ in made]
            transfer = _unwrap_ddp(first.network) is not self.network
            plans.append(
                _Plan(
                    name=name,
                    attacks=[(e, self._prepare(a)) for e, a in made],
                    lp=first.lp,
                    bounds=first.bounds,
                    kind=kind,
                    reference=name in references or transfer,
                    single_run=single,
                    factory=factory,
                    description=repr(first) + (" [transfer: crafted on another network]" if transfer else ""),
                )
            )
        return plans

    @staticmethod
    def _make(name: str, factory: Callable[..., Attack], eps: float | None) -> Attack:
        try:
            attack = factory(eps=eps)
        except Exception as e:
            raise ValueError(f"the factory of attack {name!r} failed at eps={eps!r}: {type(e).__name__}: {e}") from e
        if not isinstance(attack, Attack):
            raise ValueError(f"the factory of attack {name!r} must return an Attack, got {type(attack).__name__}.")
        return attack

    def _prepare(self, attack: Attack) -> Attack:
        """A copy with the evaluator's ``early_stop`` and ``amp`` applied and a ``DistributedDataParallel`` network
        unwrapped (the caller's object is not changed)."""
        amp = self.amp and self.state.device is not None and self.state.device.type == "cuda"
        stop = self.early_stop and not getattr(attack, "unbounded_eps", False)
        ddp = isinstance(getattr(attack, "network", None), nn.parallel.DistributedDataParallel)
        if not (amp or stop or ddp):
            return attack
        out = copy.copy(attack)
        if stop:
            out.early_stop = True
        if amp:
            out.amp = True
        if ddp:
            out.network = _unwrap_ddp(attack.network)
        return out

    def _build_uaps(self, uaps: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, value in uaps.items():
            if not isinstance(name, str) or not name or "@" in name:
                raise ValueError(f"UAP names must be non-empty strings without '@', got {name!r}.")
            delta = getattr(value, "delta", value)
            d = convert_to_tensor(delta, track_meta=False)
            d = d if isinstance(d, torch.Tensor) else torch.as_tensor(d)
            if d.ndim < 2 or d.numel() == 0 or not bool(torch.isfinite(d).all()):
                raise ValueError(f"UAP {name!r} must be a finite (C, *spatial) tensor, got shape {tuple(d.shape)}.")
            lp = as_lp(getattr(value, "lp", 2) or 2)
            eps = getattr(value, "eps", None)
            out[name] = {
                "delta": d.float(),
                "lp": lp,
                "eps": float(eps) if eps is not None else float(lp_norm(d.reshape(1, -1), lp)[0]),
                "target": getattr(value, "target", None),
                "bounds": _check_bounds(getattr(value, "bounds", None)),
                "zeta": getattr(value, "zeta", None),
            }
        return out

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
        self._clean = _Store()
        self._buffers: dict[str, _Buffer] = {}
        self._errors: list[dict[str, Any]] = []
        self._probes: dict[str, Any] = {}
        self._first = True
        self._num_classes: int | None = None
        self._data_range: float | None = None
        self._uap_controls: dict[str, torch.Tensor] = {}
        self._t0 = _clock()
        self._bar: Any = None
        self._complete = False
        self.examples = {}

    def _buffer(self, key: str) -> _Buffer:
        if key not in self._buffers:
            self._buffers[key] = _Buffer()
        return self._buffers[key]

    def _on_started(self, engine: Engine) -> None:
        self._reset_run()
        self.results = {}
        if self._ddp_buffers and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.network.buffers():  # as DDP's next forward would: BatchNorm statistics of rank 0
                dist.broadcast(buffer, src=0)
        for plan in self.plans:
            plan.failed.clear()
            if self.seed is not None:
                for _, a in plan.attacks:
                    a.set_random_state(self.seed)
        if self.progress and _has_tqdm:
            self._bar = tqdm(total=engine.state.epoch_length, desc="robustness", unit="batch", leave=False)

    def _on_epoch_completed(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._complete = True
        self._gather_ranks()
        self.compute_results()

    def _gather_ranks(self) -> None:
        """Data-parallel runs: merges every rank's per-sample stores (in rank order), attack counts, times, failures
        and errors into this rank's, so ``compute_results`` covers the whole test set on every rank. Called by every
        rank at the end of the epoch (one collective); a no-op without ``torch.distributed`` or with one rank."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        local = {
            "clean": self._clean.get_buffer() if len(self._clean) else None,
            "buffers": {
                k: (b.data.get_buffer() if len(b.data) else None, b.n_attacked, b.time_s, b.cpu_time_s, b.batches)
                for k, b in self._buffers.items()
            },
            "failed": [dict(p.failed) for p in self.plans],
            "errors": self._errors,
            "num_classes": self._num_classes,
        }
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        for i, plan in enumerate(self.plans):
            for part in parts:
                for eps, msg in part["failed"][i].items():
                    plan.failed.setdefault(eps, msg)
        errors: list[dict[str, Any]] = []
        for part in parts:
            errors += [e for e in part["errors"] if e not in errors]
        self._errors = errors
        self._num_classes = next((p["num_classes"] for p in parts if p["num_classes"] is not None), None)
        ranks = [p for p in parts if p["clean"] is not None]
        if not ranks:
            return
        self._clean.replace([torch.cat(column) for column in zip(*(p["clean"] for p in ranks))])
        keys = list(dict.fromkeys(k for p in ranks for k in p["buffers"]))
        failed = {eps_key(plan.name, eps) for plan in self.plans for eps in plan.failed}
        buffers: dict[str, _Buffer] = {}
        for key in keys:
            if key in failed:
                continue
            entries = [p["buffers"].get(key) for p in ranks]
            if any(e is None or e[0] is None for e in entries):
                self._errors.append({"where": key, "error": "not evaluated on every rank: left out of the results"})
                continue
            buf = buffers[key] = _Buffer()
            buf.data.replace([torch.cat(column) for column in zip(*(e[0] for e in entries))])
            buf.n_attacked = sum(e[1] for e in entries)
            buf.time_s = sum(e[2] for e in entries)
            buf.cpu_time_s = sum(e[3] for e in entries)
            buf.batches = sum(e[4] for e in entries)
        self._buffers = buffers

    def _on_completed(self, engine: Engine) -> None:
        if not self.results:
            self.compute_results()

    def _handle_exception(self, e: BaseException) -> None:
        """Keeps what was computed (``results`` with ``meta.complete = False``) for the ``EXCEPTION_RAISED``
        handlers (the report writes it), then always re-raises: an interrupted evaluation never looks complete."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._errors.append({"where": "run", "error": f"{type(e).__name__}: {e}"})
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
        ``{"image", "label", "pred" (clean logits), "adversarial": {key: {"pred", "image", "attack", "eps", "lp",
        "bounds"}}}``."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) != 2 and (batch[2] or batch[3]):
            raise ValueError("the robustness evaluator does not pass extra args/kwargs to the network.")
        x = convert_to_tensor(batch[0], track_meta=False)
        if not torch.is_floating_point(x):
            x = x.float()
        y = self._labels(batch[1], x.shape[0])
        logits = self._predict(x)
        if self._first:
            self._first_batch(x, y, logits)
        else:
            self._check_label_range(y, logits)
        if not bool(torch.isfinite(logits).all()):
            bad = int((~torch.isfinite(logits)).any(dim=1).sum())
            raise ValueError(f"the network returned NaN/Inf logits for {bad} of {x.shape[0]} samples.")
        correct = to_class_predictions(logits) == y
        clean_score = self._score(x, "clean")
        self._clean.extend(logits.detach().float().cpu(), y.cpu(), clean_score.cpu())
        adversarial: dict[str, Any] = {}
        out = {Keys.IMAGE: x, Keys.LABEL: y, Keys.PRED: logits, "adversarial": adversarial}
        engine.state.output = out
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if self._first:
            self._keep_examples(x, y, logits, correct)

        for plan in self.plans:
            self._run_plan(engine, plan, x, y, logits, correct, adversarial)
        for name, u in self.uaps.items():
            self._run_uap(name, u, x, y, logits, adversarial)
        if self.noise_control:
            self._run_noise(x, y, logits, correct, adversarial)

        self._first = False
        if self._bar is not None:
            self._bar.update(1)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out

    def _labels(self, labels: Any, n: int) -> torch.Tensor:
        y = convert_to_tensor(labels, track_meta=False)
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(
                f"labels of shape {tuple(y.shape)} look multi-label or one-hot; the evaluator needs (N,) class indices."
            )
        if y.ndim > 2 or y.numel() != n:
            raise ValueError(f"labels must be (N,) or (N, 1) class indices with N={n}, got shape {tuple(y.shape)}.")
        y = y.reshape(-1)
        if torch.is_floating_point(y) and not bool((y == y.round()).all()):
            raise ValueError("labels must be integral class indices, got non-integral values.")
        return y.long().to(self.state.device)

    def _autocast(self) -> Any:
        device = self.state.device
        enabled = self.amp and device is not None and device.type == "cuda"
        return torch.autocast("cuda", enabled=enabled, **self.amp_kwargs)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        with self.mode(self.network), self._autocast():
            out = self.inferer(x, self.network)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network must return logits (N, classes) with N={x.shape[0]}, got {shape}.")
        return convert_to_tensor(out, track_meta=False).float()

    def _score(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """Detector scores ``(N,)`` (NaN without a detector, or after it failed)."""
        nan = torch.full((x.shape[0],), math.nan, device=x.device)
        if self.detector is None or x.shape[0] == 0 or "detector" in self._probes.get("failed", {}):
            return nan
        try:
            with torch.no_grad():
                s = torch.as_tensor(self.detector(x)).detach().float().reshape(-1).to(x.device)
            if s.shape[0] != x.shape[0]:
                raise ValueError(f"the detector returned {s.shape[0]} scores for {x.shape[0]} images.")
            return s
        except Exception as e:
            self._probes.setdefault("failed", {})["detector"] = f"{type(e).__name__}: {e}"
            self._errors.append({"where": f"detector ({where})", "error": f"{type(e).__name__}: {e}"})
            logger.warning("detector failed on %s: %s", where, e)
            return nan

    # ------------------------------------------------------------------------------------------ first batch
    def _first_batch(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        """Refuses bad input before the attacks run; then the validity probes."""
        if not bool(torch.isfinite(logits).all()):
            bad = int((~torch.isfinite(logits)).any(dim=1).sum())
            raise ValueError(
                f"the network returned NaN/Inf logits for {bad} of {x.shape[0]} samples of the first batch: check the "
                "checkpoint and the preprocessing before attacking it."
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the first batch of images contains NaN/Inf values.")
        c = 2 if logits.shape[1] == 1 else int(logits.shape[1])
        self._num_classes = c
        self._check_label_range(y, logits)
        if self.class_names is not None and len(self.class_names) != c:
            raise ValueError(f"class_names has {len(self.class_names)} names for a model with {c} classes.")
        if not 0 <= self.positive_class < c:
            raise ValueError(f"positive_class={self.positive_class} is out of range for a model with {c} classes.")
        lo, hi = float(x.min()), float(x.max())
        boxes = [(p.name, p.bounds) for p in self.plans if p.bounds is not None]
        boxes += [(f"uap:{n}", u["bounds"]) for n, u in self.uaps.items() if u["bounds"] is not None]
        boxes += [("bounds", self.bounds)] if self.bounds is not None else []
        for who, (blo, bhi) in boxes:
            tol = 1e-5 * (bhi - blo)
            if lo < blo - tol or hi > bhi + tol:
                raise ValueError(
                    f"the data range [{lo:g}, {hi:g}] of the first batch lies outside the bounds {(blo, bhi)} of "
                    f"{who!r}: configure the attack's bounds in the model-input units of the data."
                )
            if self.check_data_range and (hi - lo) < 0.05 * (bhi - blo):
                raise ValueError(
                    f"the data range [{lo:g}, {hi:g}] of the first batch covers under 5% of the bounds {(blo, bhi)} "
                    f"of {who!r}: the bounds (and eps) are probably in other units than the data (e.g. 0-255 vs "
                    "0-1). Set check_data_range=False if this is intended."
                )
        for name, u in self.uaps.items():
            d = u["delta"][0] if u["delta"].ndim == x.ndim and u["delta"].shape[0] == 1 else u["delta"]
            if tuple(d.shape) != tuple(x.shape[1:]):
                raise ValueError(
                    f"UAP {name!r} of shape {tuple(u['delta'].shape)} does not match images of shape {tuple(x.shape)}: "
                    "expected (C, *spatial) or (1, C, *spatial)."
                )
            u["delta"] = d
        if self.bounds is not None:
            self._data_range = self.bounds[1] - self.bounds[0]
        else:
            self._data_range = max(hi - lo, 1e-12)
        gen = None
        if self.seed is not None:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
        for name, u in self.uaps.items():
            self._uap_controls[name] = noise_control(u["delta"].cpu(), "uniform", u["lp"], gen)
        self._noise_gen = torch.Generator(device=x.device)
        if self.seed is not None:
            self._noise_gen.manual_seed(self.seed)
        if self.validity_probes:
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
        k = min(self.probe_size, x.shape[0])
        xs, ys = x[:k], y[:k]
        for name, fn in (
            ("randomness", lambda: randomness_probe(self.network, xs)),
            ("gradients", lambda: gradient_probe(self.network, xs, ys)),
        ):
            try:
                self._probes[name] = fn()
            except Exception as e:
                self._probes[name] = {"error": f"{type(e).__name__}: {e}"}
        unbounded: dict[str, Any] = {}
        for plan in self.plans:
            if plan.kind != "iterative" or plan.factory is None or plan.reference:
                continue
            ladder, best = [], None
            for big in _large_eps_ladder(plan.lp, plan.bounds, plan.eps_list, x):
                try:
                    attack = self._prepare(self._make(plan.name, plan.factory, big))
                    if self.seed is not None:
                        attack.set_random_state(self.seed)
                    acc = float((to_class_predictions(self._predict(attack(xs, ys))) == ys).float().mean())
                except Exception as e:
                    ladder.append({"eps": big, "error": f"{type(e).__name__}: {e}"})
                    break
                ladder.append({"eps": big, "accuracy": acc})
                best = acc if best is None else min(best, acc)
                if acc <= self.unbounded_accuracy:
                    break
            entry: dict[str, Any] = {"n": int(k), "ladder": ladder}
            if best is None:
                entry["error"] = ladder[-1].get("error", "no probe ran") if ladder else "no probe ran"
            else:
                entry.update(eps=min((r for r in ladder if "accuracy" in r), key=lambda r: r["accuracy"])["eps"], accuracy=best)
            unbounded[plan.name] = entry
        self._probes["unbounded"] = unbounded

    def _keep_examples(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, correct: torch.Tensor) -> None:
        if self.num_examples == 0:
            return
        order = torch.cat([correct.nonzero().reshape(-1), (~correct).nonzero().reshape(-1)])
        self._example_idx = order[: self.num_examples]
        self.examples = {
            "images": _view(x[self._example_idx]),
            "labels": y[self._example_idx].cpu(),
            "clean_pred": to_class_predictions(logits[self._example_idx]).cpu(),
            "adversarial": {},
            "class_names": self.class_names,
            "spatial_dims": x.ndim - 2,
        }

    def _example(self, key: str, info: dict[str, Any], adv: torch.Tensor, adv_logits: torch.Tensor) -> None:
        if self._first and self.num_examples and "images" in self.examples:
            idx = self._example_idx
            self.examples["adversarial"][key] = dict(
                info, images=_view(adv[idx]), pred=to_class_predictions(adv_logits[idx]).cpu()
            )

    # ------------------------------------------------------------------------------------------ attacks
    def _run_plan(
        self,
        engine: Any,
        plan: _Plan,
        x: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor,
        correct: torch.Tensor,
        adversarial: dict[str, Any],
    ) -> None:
        if plan.single_run:
            self._run_single(engine, plan, x, y, logits, correct, adversarial)
            return
        reuse = self.reuse_smaller_eps
        broken = ~correct if reuse else torch.zeros_like(correct)
        adv_x, adv_logits = x.clone(), logits.clone()
        for eps, attack in plan.attacks:
            key = eps_key(plan.name, eps)
            if eps in plan.failed:
                continue
            if not reuse:
                adv_x, adv_logits = x.clone(), logits.clone()
            idx = (~broken).nonzero().reshape(-1)
            t0 = _clock()
            try:
                if idx.numel():
                    self._status(key)
                    engine.state.attack_key = key
                    engine.fire_event(RobustEvents.ATTACK_STARTED)
                    sub = attack(x[idx], y[idx])
                    sub_logits = self._predict(sub)
                    adv_x[idx], adv_logits[idx] = sub.to(adv_x.dtype), sub_logits
                    engine.fire_event(RobustEvents.ATTACK_COMPLETED)
            except Exception as e:
                self._fail(plan, eps, e)
                continue
            buf = self._buffer(key)
            buf.add_time(t0)
            buf.n_attacked += int(idx.numel())
            wrong = to_class_predictions(adv_logits) != y
            if reuse:
                broken = broken | wrong
            self._record(key, plan.name, eps, plan.lp, plan.bounds, x, adv_x, adv_logits, correct & wrong, adversarial)

    def _run_single(
        self,
        engine: Any,
        plan: _Plan,
        x: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor,
        correct: torch.Tensor,
        adversarial: dict[str, Any],
    ) -> None:
        """A minimal-perturbation attack: crafted once, a sample counts as broken at ε when its adversarial is
        within ε."""
        if plan.failed:
            return
        attack = plan.attacks[-1][1]
        active = correct if self.reuse_smaller_eps else torch.ones_like(correct)
        idx = active.nonzero().reshape(-1)
        key0 = eps_key(plan.name, plan.attacks[-1][0])
        t0 = _clock()
        sub, sub_logits = x[idx], logits[idx]
        try:
            if idx.numel():
                self._status(key0)
                engine.state.attack_key = key0
                engine.fire_event(RobustEvents.ATTACK_STARTED)
                sub = attack(x[idx], y[idx]).to(x.dtype)
                sub_logits = self._predict(sub)
                engine.fire_event(RobustEvents.ATTACK_COMPLETED)
        except Exception as e:
            for eps, _ in plan.attacks:
                self._fail(plan, eps, e)
            return
        dist = lp_norm(sub - x[idx], plan.lp)
        fooled = to_class_predictions(sub_logits) != y[idx]
        for eps, _ in plan.attacks:
            ok = fooled if eps is None else fooled & (dist <= eps * (1 + 1e-6))
            adv_x, adv_logits = x.clone(), logits.clone()
            take = idx[ok]
            adv_x[take], adv_logits[take] = sub[ok], sub_logits[ok]
            key = eps_key(plan.name, eps)
            buf = self._buffer(key)
            buf.add_time(t0, 1.0 / len(plan.attacks))
            buf.n_attacked += int(idx.numel()) if eps == plan.attacks[-1][0] else 0
            wrong = to_class_predictions(adv_logits) != y
            self._record(key, plan.name, eps, plan.lp, plan.bounds, x, adv_x, adv_logits, correct & wrong, adversarial)

    def _fail(self, plan: _Plan, eps: float | None, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        plan.failed[eps] = msg
        key = eps_key(plan.name, eps)
        self._buffers.pop(key, None)
        self._errors.append({"where": key, "error": msg})
        logger.warning("attack %s failed and is skipped from now on: %s", key, msg)

    def _status(self, key: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(key, refresh=False)

    def _record(
        self,
        key: str,
        name: str,
        eps: float | None,
        lp: LpNorm,
        bounds: tuple[float, float] | None,
        x: torch.Tensor,
        adv: torch.Tensor,
        adv_logits: torch.Tensor,
        success: torch.Tensor,
        adversarial: dict[str, Any],
    ) -> None:
        """Per-sample numbers of one (attack, ε) on this batch; perceptibility and detector scores only where the
        attack succeeded (NaN elsewhere)."""
        n = x.shape[0]
        nan = torch.full((n,), math.nan, device=x.device)
        idx = success.nonzero().reshape(-1)
        linf, l2, ps, ss, score = nan.clone(), nan.clone(), nan.clone(), nan.clone(), nan.clone()
        if idx.numel():
            norms = perturbation_norms(x[idx], adv[idx])
            linf[idx], l2[idx] = norms["linf"], norms["l2"]
            ps[idx] = psnr(x[idx], adv[idx], self._data_range).to(x.device)
            ss[idx] = ssim(x[idx], adv[idx], self._data_range).to(x.device)
            score[idx] = self._score(adv[idx], key)
        oob = torch.zeros(n, dtype=torch.bool, device=x.device)
        if bounds is not None:
            tol = 1e-5 * (bounds[1] - bounds[0])
            flat = adv.reshape(n, -1)
            oob = (flat.amin(dim=1) < bounds[0] - tol) | (flat.amax(dim=1) > bounds[1] + tol)
        self._buffer(key).extend(
            logits=adv_logits, norm=lp_norm(adv - x, lp), linf=linf, l2=l2, psnr=ps, ssim=ss, score=score,
            out_of_bounds=oob,
        )
        info = {"attack": name, "eps": eps, "lp": lp.value, "bounds": bounds}
        entry = dict(info, pred=adv_logits.clone())  # the caller updates adv/adv_logits in place at the next eps
        if self.keep_images:
            entry["image"] = adv.clone()
        adversarial[key] = entry
        self._example(key, info, adv, adv_logits)

    def _run_uap(
        self, name: str, u: dict[str, Any], x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, adversarial: dict
    ) -> None:
        bounds = u["bounds"] if u["bounds"] is not None else self.bounds
        for key, delta in ((f"uap:{name}", u["delta"]), (f"uap:{name}:control", self._uap_controls[name])):
            d = delta.to(x.device, x.dtype).reshape((1,) + tuple(x.shape[1:]))
            t0 = _clock()
            adv = clip_to_bounds(x + d, bounds)
            adv_logits = self._predict(adv)
            buf = self._buffer(key)
            buf.add_time(t0)
            buf.n_attacked += x.shape[0]
            changed = to_class_predictions(adv_logits) != to_class_predictions(logits)
            self._record(key, key, u["eps"], u["lp"], bounds, x, adv, adv_logits, changed, adversarial)

    def _run_noise(
        self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, correct: torch.Tensor, adversarial: dict
    ) -> None:
        """Random noise of the same Lp norm as each white-box budget: sign noise at ``±eps`` (L-inf), a Gaussian
        direction of norm ``eps`` (L2) or a Laplace one (L1), clipped to the bounds."""
        done = set()
        for plan in self.plans:
            if plan.reference or plan.kind not in ("iterative", "single-step"):
                continue
            for eps, _ in plan.attacks:
                if eps is None or (plan.lp, eps, plan.bounds) in done:
                    continue
                done.add((plan.lp, eps, plan.bounds))
                key = eps_key(f"noise:L{plan.lp.value}", eps)
                t0 = _clock()
                adv = clip_to_bounds(x + _noise_like(x, eps, plan.lp, self._noise_gen), plan.bounds)
                adv_logits = self._predict(adv)
                buf = self._buffer(key)
                buf.add_time(t0)
                buf.n_attacked += x.shape[0]
                wrong = to_class_predictions(adv_logits) != y
                self._record(key, f"noise:L{plan.lp.value}", eps, plan.lp, plan.bounds, x, adv, adv_logits, correct & wrong, adversarial)

    # ------------------------------------------------------------------------------------------ results
    def compute_results(self) -> dict[str, Any]:
        """Every number of the run so far, as a JSON-ready dict (non-finite values are left as floats; the report
        writer turns them into ``null``); also stored in ``self.results`` and ``engine.state.robustness``, and
        flattened into ``engine.state.metrics`` (``"clean/accuracy"``, ``"pgd@0.0039216/accuracy"``, ...).

        Returns:
            ``{"meta", "clean", "attacks", "controls", "uaps", "detector", "probes", "validity", "errors"}``.

        Raises:
            ValueError: When no batch has been evaluated (an empty iterable loader).
        """
        if len(self._clean) == 0:
            raise ValueError("no batch was evaluated: the data loader yielded nothing.")
        clean_logits, labels, clean_scores = self._clean.get_buffer()
        names = self.class_names
        clean = clinical_metrics(clean_logits, labels, names, self.positive_class)
        clean_pred = to_class_predictions(clean_logits)
        correct = clean_pred == labels
        results: dict[str, Any] = {
            "meta": self._meta(),
            "clean": clean,
            "attacks": {},
            "controls": {"noise": []},
            "uaps": {},
            "detector": None,
            "probes": {k: v for k, v in self._probes.items() if k != "failed"},
            "errors": list(self._errors),
        }
        for plan in self.plans:
            rows = []
            for eps, _ in plan.attacks:
                key = eps_key(plan.name, eps)
                if eps in plan.failed:
                    rows.append({"eps": eps, "status": "failed", "error": plan.failed[eps]})
                    continue
                if key not in self._buffers:
                    rows.append({"eps": eps, "status": "not run"})
                    continue
                rows.append(self._attack_row(key, eps, clean, clean_logits, labels, correct, clean_scores))
            status = "ok" if all(r["status"] == "ok" for r in rows) else ("failed" if plan.failed else "partial")
            results["attacks"][plan.name] = {
                "attack": plan.description,
                "kind": plan.kind,
                "lp": plan.lp.value,
                "bounds": plan.bounds,
                "reference": plan.reference,
                "single_run": plan.single_run,
                "status": status,
                "results": rows,
            }
        for key in self._buffers:
            if key.startswith("noise:"):
                lp = key.split("@")[0][len("noise:L"):]
                row = self._attack_row(key, None, clean, clean_logits, labels, correct, clean_scores, light=True)
                row["lp"], row["eps"] = lp, float(key.split("@")[1])
                results["controls"]["noise"].append(row)
        for name, u in self.uaps.items():
            results["uaps"][name] = {
                "eps": u["eps"],
                "lp": u["lp"].value,
                "zeta": u["zeta"],
                "target": u["target"],
                "perturbed": self._uap_row(f"uap:{name}", u, clean, clean_logits, labels, clean_scores),
                "control": self._uap_row(f"uap:{name}:control", u, clean, clean_logits, labels, clean_scores),
            }
        if self.detector is not None:
            finite = clean_scores[torch.isfinite(clean_scores)]
            results["detector"] = {
                "detector": repr(self.detector) if not isinstance(self.detector, nn.Module) else type(self.detector).__name__,
                "clean_scores": summarize(finite),
                "error": self._probes.get("failed", {}).get("detector"),
            }
        checks = run_validity_checks(results, self._probes, max_accuracy=self.unbounded_accuracy)
        results["validity"] = [c.to_dict() for c in checks]
        self.results = results
        self.state.robustness = results
        self.state.metrics.update(_flatten_metrics(results))
        return results

    def _meta(self) -> dict[str, Any]:
        from monai_robust import __version__

        return {
            "complete": self._complete,
            "n": len(self._clean),
            "num_classes": self._num_classes,
            "class_names": self.class_names,
            "positive_class": self.positive_class,
            "network": type(self.network).__name__,
            "device": str(self.state.device),
            "amp": self.amp,
            "reuse_smaller_eps": self.reuse_smaller_eps,
            "early_stop": self.early_stop,
            "seed": self.seed,
            "bounds": self.bounds,
            "intensity_map": None if self.intensity_map is None else self.intensity_map.to_dict(),
            "wall_time_s": _clock()[0] - self._t0[0],
            "cpu_time_s": _clock()[1] - self._t0[1],
            "monai_robust_version": __version__,
            "auc_note": (
                "with reuse_smaller_eps=True a retired sample keeps the logits of the adversarial (or clean) input it "
                "was retired with; robust AUC is then not that of each eps attacked independently"
                if self.reuse_smaller_eps
                else ""
            ),
        }

    def _perceptibility(self, b: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, Any]:
        out = {"linf": summarize(b["linf"][mask]), "l2": summarize(b["l2"][mask])}
        if self.intensity_map is not None:
            scale = 1.0 / abs(self.intensity_map.slope)
            out["linf_physical"] = summarize(b["linf"][mask] * scale)
            out["l2_physical"] = summarize(b["l2"][mask] * scale)
            out["units"] = self.intensity_map.units
        out["psnr_db"] = summarize(b["psnr"][mask])
        out["ssim"] = summarize(b["ssim"][mask])
        return out

    def _attack_row(
        self,
        key: str,
        eps: float | None,
        clean: dict[str, Any],
        clean_logits: torch.Tensor,
        labels: torch.Tensor,
        correct: torch.Tensor,
        clean_scores: torch.Tensor,
        light: bool = False,
    ) -> dict[str, Any]:
        buf = self._buffers[key]
        b = buf.get()
        n = b["logits"].shape[0]
        y, cl, cs, ok = labels[:n], clean_logits[:n], clean_scores[:n], correct[:n]
        m = clinical_metrics(b["logits"], y, self.class_names, self.positive_class)
        success = ok & (to_class_predictions(b["logits"]) != y)
        row: dict[str, Any] = {"eps": eps, "status": "ok", **m}
        if eps is not None and self.intensity_map is not None:
            row["eps_physical"] = self.intensity_map.eps_to_physical(eps)
        row["attack_success_rate"] = attack_success_rate(cl, b["logits"], y)
        row["performance_retained"] = {
            k: performance_retained(m[k], clean[k]) if _positive(clean[k]) and math.isfinite(m[k]) else math.nan
            for k in ("accuracy", "auc")
        }
        row["n_attacked"] = buf.n_attacked
        row["time_s"] = buf.time_s
        row["cpu_time_s"] = buf.cpu_time_s
        if light:
            return row
        row["perceptibility"] = self._perceptibility(b, success)
        finite_norm = b["norm"][torch.isfinite(b["norm"])]
        row["max_norm"] = float(finite_norm.max()) if finite_norm.numel() else math.nan
        row["out_of_bounds"] = int(b["out_of_bounds"].sum())
        if self.detector is not None:
            row["detector"] = _detector_stats(cs[torch.isfinite(cs)], b["score"][success & torch.isfinite(b["score"])])
        return row

    def _uap_row(
        self,
        key: str,
        u: dict[str, Any],
        clean: dict[str, Any],
        clean_logits: torch.Tensor,
        labels: torch.Tensor,
        clean_scores: torch.Tensor,
    ) -> dict[str, Any]:
        b = self._buffers[key].get()
        n = b["logits"].shape[0]
        y, cl, cs = labels[:n], clean_logits[:n], clean_scores[:n]
        m = clinical_metrics(b["logits"], y, self.class_names, self.positive_class)
        changed = to_class_predictions(b["logits"]) != to_class_predictions(cl)
        row: dict[str, Any] = {"status": "ok", **m}
        row["fooling_rate"] = fooling_rate(cl, b["logits"])
        row["per_class_fooling_rate"] = {
            (self.class_names[k] if self.class_names else str(k)): v
            for k, v in per_class_fooling_rate(cl, b["logits"], y).items()
        }
        if u["target"] is not None:
            row["targeted_success_rate"] = targeted_success_rate(b["logits"], int(u["target"]))
        row["attack_success_rate"] = attack_success_rate(cl, b["logits"], y)
        row["performance_retained"] = {
            k: performance_retained(m[k], clean[k]) if _positive(clean[k]) and math.isfinite(m[k]) else math.nan
            for k in ("accuracy", "auc")
        }
        row["perceptibility"] = self._perceptibility(b, changed)
        if self.detector is not None:
            row["detector"] = _detector_stats(cs[torch.isfinite(cs)], b["score"][changed & torch.isfinite(b["score"])])
        return row


# ---------------------------------------------------------------------------------------------- helpers
def _clock() -> tuple[float, float]:
    """Wall-clock and process-CPU seconds now."""
    return time.perf_counter(), time.process_time()


def _unwrap_ddp(network: Any) -> Any:
    """The module inside a ``DistributedDataParallel`` wrapper (anything else as is)."""
    while isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return network


def _positive(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def _view(x: torch.Tensor) -> torch.Tensor:
    """``(k, C, *spatial)`` -> ``(k, C, H, W)`` on the CPU: the middle slice of the first spatial axis for 3D."""
    x = x.detach().float().cpu().clone()
    while x.ndim > 4:
        x = x.select(2, x.shape[2] // 2)
    return x


def _large_eps_ladder(
    lp: LpNorm, bounds: tuple[float, float] | None, eps_list: Sequence[float | None], x: torch.Tensor
) -> list[float]:
    """Growing budgets for the unbounded-budget probe: 4, 16 and 64 times the largest configured ε, then one covering
    the whole data range (the box width for L-inf, times ``sqrt(d)`` for L2, ``d`` for L1). A single huge budget is
    not enough: large steps overshoot, so accuracy at the full range can stay high where a smaller large ε works."""
    width = (bounds[1] - bounds[0]) if bounds is not None else 2.0 * max(float(x.abs().max()), 1e-6)
    d = x[0].numel()
    full = float(width if lp == LpNorm.LINF else width * (math.sqrt(d) if lp == LpNorm.L2 else d))
    finite = [e for e in eps_list if e is not None and e > 0]
    top = max(finite) if finite else full / 64
    return sorted({min(top * f, full) for f in (4.0, 16.0, 64.0)} | {full})


def _noise_like(x: torch.Tensor, eps: float, lp: LpNorm, generator: torch.Generator) -> torch.Tensor:
    if lp == LpNorm.LINF:
        return (torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1) * eps
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if lp == LpNorm.L1:
        g = g.sign() * torch.empty_like(g).exponential_(generator=generator)
    norms = lp_norm(g, lp).clamp_min(1e-12)
    return g * (eps / norms).reshape((-1,) + (1,) * (x.ndim - 1))


def _detector_stats(clean: torch.Tensor, adversarial: torch.Tensor, bins: int = 20) -> dict[str, Any]:
    """ROC AUC of clean (0) vs adversarial (1) scores, and shared-bin histograms for the report."""
    out: dict[str, Any] = {"n_clean": int(clean.numel()), "n_adversarial": int(adversarial.numel()), "auc": math.nan}
    if clean.numel() and adversarial.numel():
        scores = torch.cat([clean, adversarial])
        target = torch.cat([torch.zeros(clean.numel()), torch.ones(adversarial.numel())])
        out["auc"] = float(compute_roc_auc(scores, target))
        lo, hi = float(scores.min()), float(scores.max())
        hi = hi if hi > lo else lo + 1.0
        edges = torch.linspace(lo, hi, bins + 1)
        out["histogram"] = {
            "edges": edges.tolist(),
            "clean": torch.histc(clean, bins, lo, hi).long().tolist(),
            "adversarial": torch.histc(adversarial, bins, lo, hi).long().tolist(),
        }
    return out


def _flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``engine.state.metrics`` entries: ``clean/<metric>``, ``<attack>@<eps>/<metric>``, ``uap:<name>/<metric>``."""
    keys = ("accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")
    out = {f"clean/{k}": results["clean"][k] for k in keys if k in results["clean"]}
    for name, a in results["attacks"].items():
        for r in a["results"]:
            if r.get("status") == "ok":
                out.update({f"{eps_key(name, r['eps'])}/{k}": r[k] for k in keys if k in r})
    for name, u in results["uaps"].items():
        for part in ("perturbed", "control"):
            tag = f"uap:{name}" + (":control" if part == "control" else "")
            out.update({f"{tag}/{k}": u[part][k] for k in keys + ("fooling_rate",) if k in u[part]})
    return out
