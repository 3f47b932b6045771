# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The detector guard of any bundle: a deep-feature detector (Ma et al. 2021) on the stored-units model, saved as one
self-describing file (layers, FPR and fitted state) beside the checkpoint, so a bundle needs no config of its own for
it. Bundles that define ``guard_def`` / ``guard_file`` themselves (this project's) keep theirs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_robust.bundle_helpers import load_guard
from monai_robust.bundle.loader import LoadedBundle
from monai_robust.detectors import DeepFeatureDetector, DetectorGuard
from monai_robust.networks.utils import candidate_insertion_points

__all__ = ["GUARD_FORMAT", "build_guard", "default_guard_layers", "load_bundle_guard", "save_guard"]

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


def save_guard(guard: DetectorGuard, path: str | Path) -> Path:
    """Writes the fitted guard with what rebuilds it (layers, FPR, width) into one file (``weights_only``-safe)."""
    det = guard.detector
    record = {
        "format": GUARD_FORMAT,
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
        path: the guard file; default ``models/guard.pt`` (or the config's ``guard_file``).

    Returns:
        ``(guard, units)`` or ``None`` when no guard file exists.

    Raises:
        RuntimeError: When the file does not fit the model (other layers).
    """
    if path is None and "guard_file" in bundle.parser:
        path = bundle.parser.get_parsed_content("guard_file")
    path = Path(path) if path is not None else bundle.layout.guard
    if not path.is_file():
        return None
    record = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(record, dict) and record.get("format") == GUARD_FORMAT:
        guard = build_guard(model, record["layers"], record["fpr"], record["hidden_units"])
        guard.load_state_dict(record["state"])
        return guard.to(bundle.device).eval(), "stored"
    if "guard_def" not in bundle.parser:
        raise RuntimeError(f"{path}: not a {GUARD_FORMAT} file and the bundle defines no guard_def to load it into.")
    bundle.parser["network"] = bundle.network
    return load_guard(bundle.parser.get_parsed_content("guard_def"), path), "model"
