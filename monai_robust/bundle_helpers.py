# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Small functions the bundles' configs call, so that configs stay short and hold no logic of their own."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_robust.detectors.adversarial_set import collect_adversarials

__all__ = ["fit_guard", "load_guard", "resolve_datalist"]

DATALIST_NAME = "dataset.json"
GUARD_NAME = "guard.pt"

logger = logging.getLogger(__name__)


def resolve_datalist(
    dataset_dir: str | Path, spatial_dims: int, num_images: int | None = None, size: int | None = None, seed: int = 0
) -> Path:
    """The datalist of ``dataset_dir``: the user's ``dataset.json`` when there is one, else the embedded default.

    When ``dataset_dir`` is absent or empty, the synthetic phantom dataset (2D DICOM / 3D NIfTI) is generated there
    (seconds), so a first run works offline. A folder that holds other files but no ``dataset.json`` is refused:
    build its datalist first (``monai_robust.data.folders`` reads class folders and CSV manifests).

    Args:
        dataset_dir: the data folder.
        spatial_dims: 2 or 3, for the embedded default.
        num_images, size, seed: parameters of the embedded default (see ``generate_phantom_dataset``).

    Returns:
        Path of the datalist JSON.

    Raises:
        ValueError: When ``dataset_dir`` holds data without a ``dataset.json``.

    Example::

        >>> datalist = resolve_datalist("data", spatial_dims=2, num_images=200, size=64)
    """
    from monai_robust.data.synthetic import generate_phantom_dataset  # lazy: keeps `python -m ...synthetic` clean

    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return datalist
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"dataset_dir={str(root)!r} holds files but no {DATALIST_NAME}: write a datalist (MONAI decathlon-style "
            "JSON with 'training'/'validation'/'test', 'classes' and 'intensity_map'), e.g. with "
            "monai_robust.data.folders, or point dataset_dir at an empty folder to use the embedded phantoms."
        )
    return generate_phantom_dataset(root, spatial_dims=spatial_dims, num_images=num_images, size=size, seed=seed)


def load_guard(guard: torch.nn.Module, path: str | Path, required: bool = False) -> torch.nn.Module | None:
    """Loads a fitted :class:`~monai_robust.detectors.DetectorGuard` saved by :func:`fit_guard` into ``guard``.

    Args:
        guard: the guard as the bundle defines it (``guard_def``: detector type, layers, FPR), not yet fitted.
        path: the saved ``state_dict`` (``models/guard.pt``).
        required: raise when the file is missing; by default a missing guard is logged and ``None`` returned, so
            inference still writes its predictions (with empty verdicts).

    Returns:
        The fitted guard on the device of the network it watches, or ``None`` when there is no saved guard.

    Raises:
        FileNotFoundError: When ``required`` and ``path`` does not exist.
        RuntimeError: When the file does not match ``guard`` (other detector or layers), naming the keys.

    Example::

        >>> guard = load_guard(DetectorGuard(DeepFeatureDetector(net, ["class_layers.relu"])), "models/guard.pt")
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"no fitted detector guard at {str(path)!r}: run the bundle's guard.json stage.")
        logger.warning("no fitted detector guard at %s: predictions are written without verdicts.", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    guard.load_state_dict(state)
    device = next(iter(guard.detector.network.parameters()), torch.empty(0)).device
    return guard.to(device).eval()


def fit_guard(
    guard: torch.nn.Module,
    attack: Any,
    fit_data: Iterable[Any],
    calibration_data: Iterable[Any],
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    eps_ladder: Sequence[float] | None = None,
    min_adversarial: int = 1,
    batch_size: int | None = None,
) -> torch.nn.Module:
    """Fits a detector guard for a trained network: the detector learns clean vs adversarial images made by
    ``attack`` from ``fit_data``, then the threshold is calibrated on the clean images of ``calibration_data``.

    Only adversarial images that the attack made successful (prediction changed) are used to fit, as in Ma et al.
    2021 and Feinman et al. 2017; only correctly classified images are attacked, with early stop, and with
    ``eps_ladder`` the budget is raised until ``min_adversarial`` are found (the rule:
    :func:`~monai_robust.detectors.adversarial_set.collect_adversarials`). When none is successful the attack is too
    weak for the network and this raises; fewer than ``min_adversarial`` is logged as a warning.

    Args:
        guard: an unfitted :class:`~monai_robust.detectors.DetectorGuard`.
        attack: a callable ``(images, labels) -> adversarial images``, e.g. ``PGD(network, eps=..., bounds=...)``.
        fit_data: batches (MONAI dictionaries with ``"image"`` and ``"label"``, or ``(image, label)`` pairs).
        calibration_data: clean batches in the same forms, not in ``fit_data`` (at least ``1 / fpr`` images).
        path: where to save the fitted guard's ``state_dict`` (folders created); ``None`` does not save.
        device: where to run; default the device of the network the guard watches.
        eps_ladder: increasing budgets (model-input units) tried in turn on the images not yet broken; ``None``:
            the attack's own budget only.
        min_adversarial: the number of successful adversarials after which the budget stops rising.
        batch_size: images per attack call and per detector batch; default the first batch's size.

    Returns:
        ``guard``, fitted and calibrated.

    Raises:
        ValueError: When ``fit_data`` is empty or no adversarial image is successful, or ``eps_ladder`` is given for
            an attack that takes no ``eps`` at the call.

    Example::

        >>> fit_guard(guard, PGD(net, eps=2 / 255), train_loader, val_loader, "models/guard.pt")
        >>> fit_guard(guard, PGD(net), train_loader, val_loader, eps_ladder=[2 / 255, 4 / 255], min_adversarial=16)
    """
    net = guard.detector.network
    device = torch.device(device) if device is not None else next(iter(net.parameters()), torch.empty(0)).device
    found = collect_adversarials(
        net, attack, fit_data, device, eps_ladder=eps_ladder, min_adversarial=min_adversarial, batch_size=batch_size
    )
    n_clean, n_adv = found.clean.shape[0], found.adversarial.shape[0]
    if n_clean == 0:
        raise ValueError("fit_data yielded no images: the guard needs a non-empty fitting split.")
    if n_adv == 0:
        raise ValueError(
            f"the attack {attack!r} changed no prediction on the {found.n_correct} correctly classified of the "
            f"{n_clean} fitting images, so there is nothing to learn adversarial inputs from: use a stronger attack "
            "(in the bundles: a larger `--guard_eps` or `--guard_eps_ladder`)."
        )
    if n_adv < min_adversarial:
        logger.warning("the guard is fitted on only %d adversarial images (wanted %d; budgets tried %s).",
                       n_adv, min_adversarial, list(found.attacked))
    calibration = [_image_label(b, device)[0] for b in calibration_data]
    n_cal, need = sum(len(c) for c in calibration), math.ceil(1 / guard.fpr - 1e-9)
    if n_cal < need:
        raise ValueError(
            f"calibrating the guard at fpr={guard.fpr} needs at least {need} clean images, the calibration data has "
            f"{n_cal}: give more validation images or a larger fpr (in the bundles: `--guard_fpr`)."
        )
    guard.detector.fit(found.batches("clean"), found.batches("adversarial"))
    guard.calibrate(calibration)
    logger.info(
        "detector guard fitted on %d clean / %d adversarial images; threshold %.4g at fpr %.3g (calibration fpr %.3g)",
        n_clean, n_adv, float(guard.threshold), guard.fpr, float(guard.calibration_fpr),
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(guard.state_dict(), path)
    return guard


def _image_label(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    from monai_robust.attacks.uap_sources import split_batch

    x, y = split_batch(batch, "guard data")
    return x.to(device).float(), (None if y is None else y.to(device).long())
