# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Small functions the bundles' configs call, so that configs stay short and hold no logic of their own."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_robust.detectors.adversarial_set import collect_adversarials

__all__ = ["BundlePredictor", "fit_guard", "load_guard", "resolve_datalist"]

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


class BundlePredictor:
    """A trained monai_robust bundle as a per-image predictor outside Ignite: the network with its checkpoint, the
    bundle's intensity window and input size, the class names and, when one was fitted, the detector guard. This is
    what DICOM screening, MONAI Label and other integrations call.

    Configs are read from ``bundle_dir/configs``; checkpoints, the guard and the datalist live under ``bundle_root``
    (default ``bundle_dir``), as with ``python -m monai.bundle run --bundle_root``.

    Args:
        bundle_dir: the bundle folder.
        config_files: config files to merge; default ``train.json`` (+ ``harden.json`` when
            ``inference.json`` (+ ``harden.json``, after it, when ``models/model_hardened.pt`` exists).
        ckpt_file: the weights; default the config's ``ckpt_file`` (the hardened model when ``harden.json`` is read).
        device: default the config's ``device`` (CUDA when available).
        overrides: config ids to override, as on the command line (e.g. ``bundle_root=...``, ``image_size=32``).

    Raises:
        FileNotFoundError: When a config, the checkpoint or the datalist is missing (named).

    Example::

        >>> p = BundlePredictor("bundles/robust_xray_classification")
        >>> p(image)  # {"probabilities": {"normal": 0.9, "lesion": 0.1}, "predicted_class": "normal", ...}
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        config_files: Sequence[str | Path] | None = None,
        ckpt_file: str | Path | None = None,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> None:
        from monai.bundle import ConfigParser

        from monai_robust.data.datalist import datalist_classes, datalist_intensity_map

        self.bundle_dir = Path(bundle_dir)
        configs = self.bundle_dir / "configs"
        root = Path(overrides.get("bundle_root", self.bundle_dir))
        if config_files is None:
            hardened = ckpt_file is None and (root / "models" / "model_hardened.pt").is_file()
            config_files = [configs / n for n in ("train.json", "inference.json", "harden.json") if hardened or n != "harden.json"]
        missing = [str(f) for f in config_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"bundle config file(s) not found: {missing}.")
        parser = ConfigParser()
        parser.read_config([str(f) for f in config_files])
        meta = configs / "metadata.json"
        if meta.is_file():
            parser.read_meta(str(meta))
        parser.update({"bundle_root": str(root), **overrides})
        if device is not None:
            parser["device"] = torch.device(device)
        self.device = torch.device(parser.get_parsed_content("device"))
        ckpt = Path(ckpt_file) if ckpt_file is not None else Path(parser.get_parsed_content("ckpt_file"))
        if not ckpt.is_file():  # checked before the datalist: resolving it would generate phantoms in an empty root
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} not found: train the bundle first (train.json).")
        datalist = Path(parser.get_parsed_content("datalist"))
        if not datalist.is_file():
            raise FileNotFoundError(f"the bundle's datalist {str(datalist)!r} is missing (class names and intensity map).")
        self.class_names: list[str] = datalist_classes(datalist)
        self.intensity_map = datalist_intensity_map(datalist)
        self.spatial_dims = int(parser.get_parsed_content("spatial_dims"))
        self.image_size = int(parser.get_parsed_content("image_size"))
        self.network = parser.get_parsed_content("network_def").to(self.device)
        state = torch.load(ckpt, map_location=self.device, weights_only=True)
        state = state["model"] if isinstance(state.get("model"), dict) else state
        self.network.load_state_dict(state)
        self.network.eval()
        self.in_channels = _in_channels(self.network)
        self.guard = None
        if "guard_def" in parser and "guard_file" in parser:
            parser["network"] = self.network
            self.guard = load_guard(parser.get_parsed_content("guard_def"), parser.get_parsed_content("guard_file"))
        self.name = str(parser.get("_meta_#name", self.bundle_dir.name))
        self.version = str(parser.get("_meta_#version", "0"))
        self._window = self.intensity_map.transform("image") if self.intensity_map.physical_range else None

    def preprocess(self, image: Any) -> torch.Tensor:
        """Raw stored values ``(C, *spatial)`` (channel first, as ``LoadImage(ensure_channel_first=True)`` gives)
        to the network's input ``(in_channels, *[image_size] * spatial_dims)`` in model units: the bundle's intensity
        window exactly as in training (clipped to the window, like a CT window), then resized.

        Args:
            image: torch / numpy / MetaTensor. For a 2D bundle a ``(C, H, W, 1)`` single slice is accepted.

        Returns:
            A float tensor on the predictor's device.

        Raises:
            ValueError: When the rank or the number of channels does not fit the network, or values are not finite.
        """
        from monai.transforms import Resize

        x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).as_subclass(torch.Tensor)
        x = x.float()
        if self.spatial_dims == 2 and x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != self.spatial_dims + 1 or x.shape[0] != self.in_channels:
            raise ValueError(
                f"image of shape {tuple(x.shape)} does not fit this {self.spatial_dims}D bundle: expected "
                f"({self.in_channels}, {', '.join(['spatial'] * self.spatial_dims)}) channel-first raw values."
            )
        if not torch.isfinite(x).all():
            raise ValueError("image holds NaN or Inf values.")
        if self._window is not None:
            x = torch.as_tensor(self._window({"image": x})["image"]).as_subclass(torch.Tensor)
        else:
            x = self.intensity_map.to_model(x)
        if tuple(x.shape[1:]) != (self.image_size,) * self.spatial_dims:
            x = torch.as_tensor(Resize([self.image_size] * self.spatial_dims, mode="area")(x)).as_subclass(torch.Tensor)
        return x.float().to(self.device)

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """Class probabilities, the predicted class and the guard's verdict for a preprocessed batch.

        Args:
            images: ``(N, in_channels, *spatial)`` as :meth:`preprocess` returns them (stacked).

        Returns:
            One dict per image: ``probabilities`` (class name -> float), ``predicted_class``, ``predicted_index``,
            ``guard`` (``{"adversarial_suspected", "score", "threshold"}``, or ``None`` without a guard).
        """
        images = torch.as_tensor(images).as_subclass(torch.Tensor).to(self.device).float()
        with torch.no_grad():
            prob = torch.softmax(self.network(images).float(), dim=1).cpu()
        verdicts = self.guard.verdicts(images) if self.guard is not None else [None] * len(images)
        return [
            {
                "probabilities": {c: float(v) for c, v in zip(self.class_names, p.tolist())},
                "predicted_class": self.class_names[int(p.argmax())],
                "predicted_index": int(p.argmax()),
                "guard": g,
            }
            for p, g in zip(prob, verdicts)
        ]

    def __call__(self, image: Any) -> dict[str, Any]:
        """``predict(preprocess(image)[None])[0]``: one raw image in, its prediction out."""
        return self.predict(self.preprocess(image)[None])[0]


def _in_channels(network: torch.nn.Module) -> int:
    for m in network.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            return int(m.in_channels)
    raise ValueError(f"cannot tell the input channels of {type(network).__name__}: it has no convolution.")
