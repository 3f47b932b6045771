# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A trained bundle as a per-image predictor (:class:`BundlePredictor`). Datalist resolution is
:func:`monai_robust.data.dataset_dir.resolve_datalist`; guard fitting and loading are in :mod:`monai_robust.detectors.guard`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_robust.data.datalist import datalist_classes, datalist_intensity_map
from monai_robust.detectors.guard import load_guard
from monai_robust.utils.files import load_torch_file
from monai_robust.utils.overrides import bundle_vocabulary, check_override_ids

__all__ = ["BundlePredictor"]



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
        ValueError: When an override names an id the configs do not define (close matches listed), or the
            checkpoint is empty, truncated or not a PyTorch file (:class:`~monai_robust.utils.CorruptFileError`).

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
        check_override_ids(bundle_vocabulary(config_files), overrides, where="predictor's overrides")
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
        state = load_torch_file(ckpt, "checkpoint", map_location=self.device)
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
