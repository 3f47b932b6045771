# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The detector guard of any bundle: a deep-feature detector (Ma et al. 2021) on the stored-units model, saved as one
self-describing file (layers, FPR and fitted state) beside the checkpoint, so a bundle needs no config of its own for
it. Bundles that define ``guard_def`` / ``guard_file`` themselves (this project's) keep theirs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from monai_robust.attacks import PGD
from monai_robust.bundle.layout import GUARD_NAME
from monai_robust.bundle.loader import LoadedBundle
from monai_robust.detectors import DeepFeatureDetector, DetectorGuard
from monai_robust.detectors.guard import fit_guard, load_guard
from monai_robust.networks.utils import candidate_insertion_points

__all__ = [
    "GUARD_FORMAT",
    "build_guard",
    "default_guard_layers",
    "fit_bundle_guard",
    "load_bundle_guard",
    "save_guard",
]

logger = logging.getLogger(__name__)

GUARD_FORMAT = "monai_robust.guard/1"


def default_guard_layers(model: nn.Module, example: torch.Tensor, count: int = 2) -> list[str]:
    """The last ``count`` feature maps of ``model`` at the shallowest naming depth (``network.features.denseblock3``
    for DenseNet, ``network.layer4`` for SE-ResNet): where Ma et al. found adversarial features far from clean ones.

    Args:
        model: the stored-units model (or any network).
        example: one input batch ``(N, C, *spatial)`` it accepts.
        count: how many layers.

    Returns:
        Module names, in forward order.

    Raises:
        ValueError: When the network has no feature-map module.
    """
    names = [n for n, _ in candidate_insertion_points(model, example[:1])]
    if not names:
        raise ValueError(f"{type(model).__name__} has no module returning a feature map: name the guard layers.")
    depth = min(n.count(".") for n in names if n.count(".") >= 1) if any("." in n for n in names) else 0
    pick = [n for n in names if n.count(".") == max(depth, 1) and not n.endswith(("act", "relu", "norm"))] or names
    return pick[-count:]


def build_guard(model: nn.Module, layers: Sequence[str], fpr: float = 0.05, hidden_units: int = 32) -> DetectorGuard:
    """An unfitted guard: ``DetectorGuard(DeepFeatureDetector(model, layers), fpr)``."""
    return DetectorGuard(DeepFeatureDetector(model, list(layers), hidden_units=hidden_units), fpr=fpr)


def save_guard(guard: DetectorGuard, path: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Writes the fitted guard with what rebuilds it (layers, FPR, width) and the name of the checkpoint it watches
    into one file (``weights_only``-safe)."""
    det = guard.detector
    record = {
        "format": GUARD_FORMAT,
        "checkpoint": None if checkpoint is None else Path(checkpoint).name,
        "layers": list(det.layers),
        "fpr": float(guard.fpr),
        "hidden_units": int(getattr(det.classifier, "hidden_units", 32)),
        "state": guard.state_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, path)
    return path


def load_bundle_guard(bundle: LoadedBundle, model: nn.Module, path: str | Path | None = None) -> tuple[Any, str] | None:
    """The bundle's fitted guard and the units it reads: ``"stored"`` (a guard of this module, on ``model``) or
    ``"model"`` (a bundle's own ``guard_def`` on its network, fed the network's input).

    Args:
        bundle: the loaded bundle.
        model: the stored-units model of ``bundle``.
        path: the guard file; default ``guard.pt`` beside the checkpoint (or the config's ``guard_file``).

    Returns:
        ``(guard, units)`` or ``None`` when no guard file exists.

    Raises:
        RuntimeError: When the file does not fit the model (other layers).
    """
    if path is None and "guard_file" in bundle.parser:
        path = bundle.parser.get_parsed_content("guard_file")
    if path is None:
        path = (bundle.checkpoint.parent if bundle.checkpoint is not None else bundle.layout.models) / GUARD_NAME
    path = Path(path)
    if not path.is_file():
        return None
    record = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(record, dict) and record.get("format") == GUARD_FORMAT:
        watched = record.get("checkpoint")
        if watched and bundle.checkpoint is not None and watched != bundle.checkpoint.name:
            logger.warning("%s was fitted for %s, the network now is %s: refit it (monai-robust guard).", path, watched, bundle.checkpoint.name)
        guard = build_guard(model, record["layers"], record["fpr"], record["hidden_units"])
        guard.load_state_dict(record["state"])
        return guard.to(bundle.device).eval(), "stored"
    if "guard_def" not in bundle.parser:
        raise RuntimeError(f"{path}: not a {GUARD_FORMAT} file and the bundle defines no guard_def to load it into.")
    bundle.parser["network"] = bundle.network
    return load_guard(bundle.parser.get_parsed_content("guard_def"), path), "model"


def fit_bundle_guard(
    model: nn.Module,
    fit_data: Iterable[Any],
    calibration_data: Iterable[Any],
    eps: float,
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    layers: Sequence[str] | None = None,
    fpr: float = 0.05,
    num_steps: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> DetectorGuard:
    """Fits and calibrates a deep-feature guard on the stored-units model and saves it (:func:`save_guard`).

    The detector learns clean vs PGD images (ε in stored units, the model's bounds as the box) of ``fit_data``; its
    threshold is calibrated on the clean images of ``calibration_data`` (at least ``1 / fpr`` of them).

    Args:
        model: the stored-units model (:class:`~monai_robust.bundle.stored_units.StoredUnitsModel`).
        fit_data: labelled batches in stored units.
        calibration_data: other clean batches in stored units.
        eps: the attack's L∞ budget in stored units.
        path: the guard file.
        checkpoint: the checkpoint the model was loaded from (recorded).
        layers: module names of ``model`` to read; default :func:`default_guard_layers`.
        fpr: target false-positive rate on clean images.
        num_steps: PGD steps.
        seed: seeds PGD's random start.
        progress: tqdm bars with time estimates over both passes.

    Returns:
        The fitted guard.

    Raises:
        ValueError: From ``fit_guard`` (no successful adversarial, too few calibration images), naming the fix.
    """
    fit_data, calibration_data = list(fit_data), list(calibration_data)
    if not fit_data:
        raise ValueError("the guard's fitting data holds no batch.")
    if layers is None:
        layers = default_guard_layers(model, fit_data[0]["image"].as_subclass(torch.Tensor).float())
    guard = build_guard(model, layers, fpr)
    attack = PGD(model, eps=float(eps), num_steps=num_steps, bounds=getattr(model, "bounds", None)).set_random_state(seed)
    fit_guard(
        guard,
        attack,
        tqdm(fit_data, desc="guard: attacking the fitting images", disable=not progress),
        tqdm(calibration_data, desc="guard: calibrating", disable=not progress),
    )
    save_guard(guard, path, checkpoint)
    return guard
