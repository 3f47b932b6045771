# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A MONAI Label classification infer task that serves a trained monai_robust bundle, with its detector guard and,
on request, the robustness of the current image (the smallest L-inf budget that flips the prediction).

MONAI Label (``monailabel``) is optional: this module imports without it and the task raises a clear error only when
it is built. ``monailabel`` 0.8.5 cannot be installed with its dependencies next to a CPU torch (it pulls torchvision
and a CUDA torch); ``requirements-monailabel.txt`` at the repository root lists what this task needs, to install with
``pip install --no-deps -r requirements-monailabel.txt``. The MONAI Label app and server that serve these tasks are
:mod:`monai_robust.integrations.monailabel_app` and ``apps/monailabel`` (their requirements:
``requirements-monailabel-server.txt``).

Result JSON (the second item ``task(request)`` returns)::

    {"prediction": [{"idx": 0, "label": "normal", "score": 0.91}, ...],     # MONAI Label's ClassificationWriter
     "predicted_label": "normal", "predicted_index": 0, "probabilities": {"normal": 0.91, "lesion": 0.09},
     "guard": {"adversarial_suspected": false, "score": -2.3, "threshold": 0.4} | null,
     "model": {"name": ..., "version": ..., "bundle": ...}, "input_shape": [1, 64, 64],
     "contract": [{"code": "low_bit_depth", "severity": "flag", "message": ...}], "refused": false,
     "statements": ["Research ...; not for clinical use", "Trained on synthetic data: ..."],
     "robustness": null | {"flipped": true, "eps_raw": 49.1, "raw_units": "stored values", ...},
     "label_names": [...], "latencies": {...}}
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged
from monai.utils import optional_import

from monai_robust.attacks.pgd import PGD
from monai_robust.bundle.contract import REFUSE
from monai_robust.bundle.predictor import BundlePredictor, header_value
from monai_robust.data.image_reader import DicomReader

BasicInferTask, has_monailabel = optional_import(
    "monailabel.tasks.infer.basic_infer", name="BasicInferTask", as_type="base"
)
InferType, _ = optional_import("monailabel.interfaces.tasks.infer_v2", name="InferType")

__all__ = ["RobustClassificationInferTask", "minimal_flip_eps", "monailabel_infers"]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "MONAI Label is not importable: install it without its CUDA torch/torchvision dependencies with "
    "`pip install --no-deps -r requirements-monailabel.txt` (repository root)."
)

ROBUSTNESS_DEFAULTS: dict[str, Any] = {"robustness": False, "robustness_steps": 10, "robustness_rel_tol": 0.05}


def _prediction(network: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(network(x).argmax(dim=1)[0])


def minimal_flip_eps(
    network: torch.nn.Module,
    image: torch.Tensor,
    *,
    bounds: tuple[float, float] | None,
    num_steps: int = 10,
    rel_tol: float = 0.05,
    max_eps: float | None = None,
    init_eps: float | None = None,
) -> dict[str, Any]:
    """The smallest L-inf radius ``eps`` (model units) at which PGD flips the network's prediction of one image,
    found by doubling then bisection.

    Each probe runs deterministic PGD (no random start, ``num_steps`` steps of ``2.5 * eps / num_steps``, clipped to
    ``bounds``) against the current prediction; a probe succeeds when the network's argmax on the result differs.
    The search keeps ``eps_lower`` (PGD failed) and ``eps`` (PGD succeeded) and stops when
    ``eps - eps_lower <= rel_tol * eps``. PGD is an attack, not a verifier: ``eps`` is an upper bound on the true
    minimal adversarial radius, and because PGD's success is not strictly monotone in ``eps``, a smaller budget
    than ``eps_lower`` may still flip the image in rare cases.

    Args:
        network: classifier returning logits ``(1, classes)``, in eval mode.
        image: the preprocessed image ``(1, C, *spatial)`` in model units, inside ``bounds``.
        bounds: ``(low, high)`` of valid model inputs (the bundle's intensity window), or ``None``.
        num_steps: PGD steps per probe (>= 1).
        rel_tol: relative width of the final bracket, in (0, 1).
        max_eps: largest radius tried; default the width of ``bounds`` (1.0 without bounds).
        init_eps: first radius tried; default ``max_eps / 256``.

    Returns:
        ``{"flipped": bool, "eps": float | None, "eps_lower": float, "max_eps": float, "num_probes": int,
        "original_index": int, "adversarial_index": int | None, "adversarial": Tensor | None}``; ``eps`` is
        ``None`` when even ``max_eps`` does not flip the prediction.

    Raises:
        ValueError: When ``image`` is not a single image ``(1, C, *spatial)`` or an argument is out of range.

    Example::

        >>> r = minimal_flip_eps(net, x[None], bounds=(0.0, 1.0))
        >>> r["eps"], r["original_index"], r["adversarial_index"]
        (0.0123, 1, 0)
    """
    if not isinstance(image, torch.Tensor) or image.ndim < 3 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one preprocessed image (1, C, *spatial), got {shape}.")
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise ValueError(f"rel_tol must be in (0, 1), got rel_tol={rel_tol!r}.")
    if max_eps is None:
        max_eps = float(bounds[1] - bounds[0]) if bounds is not None else 1.0
    if not (isinstance(max_eps, (int, float)) and math.isfinite(max_eps) and max_eps > 0):
        raise ValueError(f"max_eps must be a finite number > 0, got max_eps={max_eps!r}.")
    init_eps = max_eps / 256 if init_eps is None else init_eps
    if not (isinstance(init_eps, (int, float)) and 0 < init_eps <= max_eps):
        raise ValueError(f"init_eps must be in (0, max_eps={max_eps}], got init_eps={init_eps!r}.")

    x = image.detach().float()
    original = _prediction(network, x)
    label = torch.tensor([original], device=x.device)
    probes = 0

    def probe(eps: float) -> tuple[bool, torch.Tensor, int]:
        nonlocal probes
        probes += 1
        adv = PGD(network, eps, num_steps=num_steps, random_start=False, bounds=bounds)(x, label)
        index = _prediction(network, adv)
        return index != original, adv, index

    lo, hi = 0.0, float(init_eps)
    flipped, adv, index = probe(hi)
    while not flipped and hi < max_eps:
        lo, hi = hi, min(2 * hi, float(max_eps))
        flipped, adv, index = probe(hi)
    if not flipped:
        return {
            "flipped": False,
            "eps": None,
            "eps_lower": hi,
            "max_eps": float(max_eps),
            "num_probes": probes,
            "original_index": original,
            "adversarial_index": None,
            "adversarial": None,
        }
    best_adv, best_index = adv, index
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        flipped, adv, index = probe(mid)
        if flipped:
            hi, best_adv, best_index = mid, adv, index
        else:
            lo = mid
    return {
        "flipped": True,
        "eps": hi,
        "eps_lower": lo,
        "max_eps": float(max_eps),
        "num_probes": probes,
        "original_index": original,
        "adversarial_index": best_index,
        "adversarial": best_adv.detach(),
    }


class _BundlePreprocessd:
    """Dictionary transform: the loaded raw image -> ``BundlePredictor.preprocess`` (stored units, the bundle's geometry
    applied); the raw shape kept, and the input contract checked on the raw stored values with the DICOM modality and
    body part (``contract_flags``): a refusal is a ``ValueError`` naming the image and the reasons."""

    def __init__(self, predictor: Any, key: str = "image") -> None:
        self.predictor = predictor
        self.key = key

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        raw = d[self.key]
        meta = getattr(raw, "meta", {})
        d["input_shape"] = [int(s) for s in raw.shape]
        flags = self.predictor.check(raw, header_value(meta, "Modality"), header_value(meta, "BodyPartExamined"))
        refusals = [f["message"] for f in flags if f["severity"] == REFUSE]
        if refusals:
            raise ValueError(
                f"{d.get('image_path', '<image>')!s}: refused by the bundle's input contract: {'; '.join(refusals)}"
            )
        d["contract_flags"] = flags
        d[self.key] = self.predictor.preprocess(raw)
        return d


class RobustClassificationInferTask(BasicInferTask):
    """MONAI Label classification task serving a trained monai_robust bundle through
    :class:`~monai_robust.bundle.predictor.BundlePredictor`: the image MONAI Label gives (DICOM file, DICOM series
    folder, NIfTI, ...) is loaded with :class:`~monai_robust.data.image_reader.DicomReader` registered in front of
    MONAI's readers, preprocessed by the bundle, classified, and checked by the bundle's detector guard.

    With the request flag ``robustness`` (``true`` / ``"true"``) the result also holds the smallest L-inf budget that
    flips the prediction (:func:`minimal_flip_eps`, deterministic PGD bisection), in the image's stored values (the
    bundle's intensity transforms are part of the model under attack; stored values, HU), and the guard's verdict
    on the flipped image. Request keys ``robustness_steps`` (PGD steps) and ``robustness_rel_tol`` tune it.

    The network runs on the predictor's device; the request's ``device`` is not used. Calls are serialised by a lock
    (the robustness search switches the shared network's parameter flags while it runs), so a MONAI Label thread pool
    can share one task.

    Args:
        predictor: a :class:`~monai_robust.bundle.predictor.BundlePredictor`, or a bundle folder to build one from.
        description: shown by MONAI Label; default from the bundle's name and version.
        config: more user-config defaults (MONAI Label shows them), merged over ``robustness=False``,
            ``robustness_steps=10``, ``robustness_rel_tol=0.05``.
        predictor_kwargs: passed to ``BundlePredictor`` when ``predictor`` is a folder (e.g. ``bundle_root``).

    Raises:
        RuntimeError: When MONAI Label is not importable (says how to install it).
        FileNotFoundError: From ``BundlePredictor`` when the bundle is not trained.

    Example::

        >>> task = RobustClassificationInferTask("bundles/robust_xray_classification")
        >>> _, result = task({"image": "/data/cr/image.dcm", "robustness": True})
        >>> result["predicted_label"], result["guard"]["adversarial_suspected"], result["robustness"]["eps_raw"]
        ('lesion', False, 41.0)
    """

    def __init__(
        self,
        predictor: Any,
        description: str | None = None,
        config: Mapping[str, Any] | None = None,
        **predictor_kwargs: Any,
    ) -> None:
        if not has_monailabel:
            raise RuntimeError(INSTALL_HINT)
        if isinstance(predictor, (str, os.PathLike)):
            predictor = BundlePredictor(predictor, **predictor_kwargs)
        elif predictor_kwargs:
            raise ValueError(
                f"predictor_kwargs {sorted(predictor_kwargs)} are only for a bundle folder, not a built predictor."
            )
        for attr in ("network", "model", "bounds", "class_names", "spatial_dims", "check", "preprocess", "predict"):
            if not hasattr(predictor, attr):
                raise ValueError(
                    f"predictor must be a BundlePredictor or a bundle folder, got {type(predictor).__name__}."
                )
        self.predictor = predictor
        self._lock = threading.Lock()
        name, version = getattr(predictor, "name", "bundle"), getattr(predictor, "version", "0")
        super().__init__(
            path=None,
            network=predictor.network,
            type=InferType.CLASSIFICATION,
            labels=list(predictor.class_names),
            dimension=int(predictor.spatial_dims),
            description=description or f"{name} {version}: classification with adversarial-input guard",
            config={**ROBUSTNESS_DEFAULTS, **(config or {})},
        )

    def pre_transforms(self, data: Any = None) -> list[Any]:
        """Load (channel first, raw values; :class:`DicomReader` first) and the bundle's preprocessing."""
        load = LoadImaged(self.input_key, image_only=True, ensure_channel_first=True, dtype=np.float32)
        load.register(DicomReader())
        return [_check_input_path, load, _BundlePreprocessd(self.predictor, self.input_key)]

    def post_transforms(self, data: Any = None) -> list[Any]:
        """None: :meth:`run_inferer` leaves probabilities and the bundle's result in the data."""
        return []

    def inferer(self, data: Any = None) -> Any:
        """Unused: :meth:`run_inferer` calls the predictor (network and guard) directly."""
        return None

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        """Prediction and guard verdict from ``BundlePredictor.predict``; with ``robustness`` the flip budget."""
        x = data[self.input_key]
        x = (x if x.ndim == self.predictor.spatial_dims + 2 else x[None]).to(self.predictor.device)
        robustness = _as_flag(data.get("robustness", False))
        with self._lock:
            flags = data.get("contract_flags")  # checked on the raw image by the pre-transforms
            result = self.predictor.predict(x, flags=None if flags is None else [flags])[0]
            if result["refused"]:  # only without the pre-transforms, which refuse first
                reasons = "; ".join(f["message"] for f in result["contract"] if f["severity"] == REFUSE)
                raise ValueError(f"{data.get('image_path', '<image>')!s}: refused by the bundle's input contract: {reasons}")
            data["robustness_result"] = self._robustness(x, data) if robustness else None
        data["bundle_result"] = result
        # a MetaTensor: MONAI Label's ClassificationWriter logs ``.array``
        data[self.output_label_key] = MetaTensor([result["probabilities"][c] for c in self.predictor.class_names])
        return data

    def _robustness(self, x: torch.Tensor, data: Mapping[str, Any]) -> dict[str, Any]:
        bounds = self.predictor.bounds
        steps, tol = int(data.get("robustness_steps", 10)), float(data.get("robustness_rel_tol", 0.05))
        r = minimal_flip_eps(self.predictor.model, x, bounds=bounds, num_steps=steps, rel_tol=tol)
        out = {
            "flipped": r["flipped"],
            "eps_raw": r["eps"],
            "eps_lower_raw": r["eps_lower"],
            "max_eps_raw": r["max_eps"],
            "raw_units": "stored values",
            "norm": "Linf",
            "method": f"PGD bisection ({steps} steps, no random start, rel_tol={tol:g}) on the stored values, "
            "through the bundle's intensity transforms",
            "bounds_raw": list(bounds) if bounds is not None else None,
            "num_probes": r["num_probes"],
            "adversarial_label": None,
            "guard_on_adversarial": None,
        }
        if r["flipped"]:
            adv = self.predictor.predict(r["adversarial"])[0]
            out["adversarial_label"] = adv["predicted_class"]
            out["guard_on_adversarial"] = adv["guard"]
        return out

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[Any, dict[str, Any]]:
        """MONAI Label's ``ClassificationWriter`` result (``prediction``) plus the bundle's fields."""
        _, result_json = super().writer(data, extension, dtype)
        r = data["bundle_result"]
        result_json.update(
            {
                "predicted_label": r["predicted_class"],
                "predicted_index": r["predicted_index"],
                "probabilities": r["probabilities"],
                "guard": r["guard"],
                "model": {
                    "name": getattr(self.predictor, "name", None),
                    "version": getattr(self.predictor, "version", None),
                    "bundle": str(getattr(self.predictor, "bundle_dir", "")) or None,
                },
                "input_shape": data.get("input_shape"),
                "contract": r["contract"],
                "refused": r["refused"],
                "statements": r["statements"],
                "robustness": data.get("robustness_result"),
            }
        )
        return None, result_json


def _as_flag(value: Any) -> bool:
    """A request flag: a bool, or ``"true"``/``"false"``/``"1"``/``"0"``/``"yes"``/``"no"`` (MONAI Label: strings)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"request flag robustness must be true or false, got {value!r}.")


def _check_input_path(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Refuses a missing image path by name before a reader guesses at it."""
    image = data.get("image")
    if image is None:
        raise ValueError(f"the request has no 'image'; keys: {sorted(data)}.")
    if isinstance(image, (str, os.PathLike)) and not Path(image).exists():
        raise FileNotFoundError(f"image {str(image)!r} not found.")
    return data


def monailabel_infers(bundles: Mapping[str, Any] | Any, **task_kwargs: Any) -> dict[str, Any]:
    """Infer tasks for ``MONAILabelApp.init_infers``: one :class:`RobustClassificationInferTask` per bundle.

    Args:
        bundles: ``{name: bundle folder or BundlePredictor}``, or one folder / a list of folders (named by folder).
        task_kwargs: passed to each task (``config``, ``bundle_root``, ...).

    Returns:
        ``{name: task}``.

    Raises:
        RuntimeError: When MONAI Label is not importable.

    Example::

        >>> class MyApp(MONAILabelApp):
        ...     def init_infers(self):
        ...         return monailabel_infers({"xray_robust": "bundles/robust_xray_classification"})
    """
    if isinstance(bundles, (str, os.PathLike)):
        bundles = [bundles]
    if not isinstance(bundles, Mapping):
        bundles = {Path(b).name: b for b in bundles}
    return {str(name): RobustClassificationInferTask(b, **task_kwargs) for name, b in bundles.items()}

