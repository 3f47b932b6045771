# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``BundlePredictor``: any classification bundle as a per-image predictor outside Ignite, running exactly the
preprocessing its inference config spells out (one source of truth), with class names, the input contract's flags,
the statements its metadata demands and, when one was fitted, the detector guard's verdict."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirst, EnsureChannelFirstd, LoadImage, LoadImaged

from monai_robust.bundle.contract import REFUSE, contract_of
from monai_robust.bundle.guard import load_bundle_guard
from monai_robust.bundle.loader import load_bundle
from monai_robust.bundle.stored_units import StoredUnitsModel, split_preprocessing

__all__ = ["BundlePredictor", "header_value"]

_LOADERS = (LoadImage, LoadImaged, EnsureChannelFirst, EnsureChannelFirstd)


class BundlePredictor:
    """A bundle as a predictor: stored values in, class probabilities, contract flags and guard verdict out.

    The bundle's inference ``preprocessing`` is split (:func:`~monai_robust.bundle.stored_units.split_preprocessing`)
    into the loading/geometry part, run on each input, and the intensity part, run inside :attr:`model` together
    with the network, so predictions, attacks and the guard all see the same transforms training used.

    Args:
        bundle_dir: the bundle folder (model-zoo layout, JSON or YAML configs).
        overrides: config ids to override, as on MONAI's command line (``{"network_def#spatial_dims": 2}``).
        device: default the config's ``device``.
        checkpoint: the weights; default the hardened checkpoint when one was written beside the user's, else the
            config's (``ckpt_file`` is an alias).
        hardened: with ``checkpoint=None``, prefer the hardened checkpoint written beside the config's, by
            ``monai-robust harden`` or by the bundle's own harden config (``models/model_hardened.pt``; the sparsity
            blocks its record names are inserted into ``network_def``).
        guard: the guard file; default ``models/guard.pt`` (or the config's ``guard_file``); ``False``: no guard.
        preprocessing_id: the config id of the preprocessing (default: see ``load_bundle``).
        bounds: ``(low, high)`` stored-value range; default the input contract's.
        **kwargs: further overrides (``bundle_root=...``, ``image_size=32``).

    Raises:
        FileNotFoundError: When a config or the checkpoint is missing (the message names the config id to set).
        RuntimeError: When the checkpoint (or the preferred hardened one) does not fit ``network_def``.

    Example::

        >>> p = BundlePredictor("endoscopic_inbody_classification", {"preprocessing#transforms#2#spatial_size": [64, 64]})
        >>> p.predict_files([{"image": "frame.jpg"}])[0]["predicted_class"]
        'in body'
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        overrides: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        checkpoint: str | Path | None = None,
        ckpt_file: str | Path | None = None,
        hardened: bool = True,
        guard: str | Path | bool | None = None,
        preprocessing_id: str | None = None,
        bounds: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        overrides = {**dict(overrides or {}), **kwargs}
        checkpoint = checkpoint if checkpoint is not None else ckpt_file
        self.bundle = load_bundle(
            bundle_dir,
            overrides,
            device=device,
            checkpoint=checkpoint,
            preprocessing_id=preprocessing_id,
            prefer_hardened=hardened,
        )
        self.split = split_preprocessing(self.bundle.preprocessing, self.bundle.image_key)
        self.contract = contract_of(self.bundle)
        self.bounds = bounds if bounds is not None else self.contract.stored_range
        self.model = StoredUnitsModel(self.bundle.network, self.split.steps, self.bounds).eval()
        self.guard, self.guard_units = None, None
        if guard is not False:
            found = load_bundle_guard(self.bundle, self.model, None if guard in (None, True) else guard)
            if found is not None:
                self.guard, self.guard_units = found
        self._reader = Compose([t for t in self.split.loading.transforms if isinstance(t, _LOADERS)])
        self._geometry = Compose([t for t in self.split.loading.transforms if not isinstance(t, _LOADERS)])

    # -- what integrations read ----------------------------------------------------------------------------------
    @property
    def network(self) -> torch.nn.Module:
        """The bundle's network (model units)."""
        return self.bundle.network

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    @property
    def class_names(self) -> list[str]:
        n = self.bundle.class_names
        return n if n else [str(i) for i in range(self._num_outputs())]

    @property
    def spatial_dims(self) -> int:
        return self.contract.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.contract.channels

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def intensity_map(self) -> Any:
        """The config's ``intensity_map`` (this project's bundles), else ``None``."""
        return self.bundle.get("intensity_map")

    @property
    def image_size(self) -> int | None:
        """The config's ``image_size``, else the metadata's input ``spatial_shape[0]``."""
        size = self.bundle.get("image_size")
        if size is None:
            inputs = self.bundle.metadata.get("network_data_format", {}).get("inputs", {})
            shape = next(iter(inputs.values()), {}).get("spatial_shape") if inputs else None
            size = shape[0] if shape else None
        return None if size is None else int(size)

    @property
    def statements(self) -> list[str]:
        """What every result must carry (intended use, synthetic training data)."""
        return list(self.contract.statements)

    def _num_outputs(self) -> int:
        shape = [self.in_channels] + [32] * self.spatial_dims
        with torch.no_grad():
            return int(self.bundle.network(torch.zeros(1, *shape, device=self.device)).shape[1])

    # -- inputs ------------------------------------------------------------------------------------------------
    def load(self, item: Mapping[str, Any] | str | os.PathLike) -> MetaTensor:
        """One input through the bundle's loading/geometry part: stored units, ``(C, *spatial)``, with the reader's
        metadata (DICOM ``Modality`` among it when the input is DICOM).

        Args:
            item: a data dict (``{"image": path}``) or an image path.
        """
        return _image(self.split.loading(self._data(item)), self.split.image_key)

    def read(self, item: Mapping[str, Any] | str | os.PathLike) -> MetaTensor:
        """One input through the bundle's reading transforms only (``LoadImage(d)``, ``EnsureChannelFirst(d)``): the
        stored values as stored, ``(C, *spatial)``, before any resampling, with the reader's metadata; what the
        input contract is checked on (:meth:`load` adds the geometry part).

        Args:
            item: a data dict (``{"image": path}``) or an image path.
        """
        return _image(self._reader(self._data(item)), self.split.image_key)

    def _data(self, item: Mapping[str, Any] | str | os.PathLike) -> Any:
        """What the loading part takes: the data dict (dictionary transforms) or the path (array transforms)."""
        key = self.split.image_key
        data = dict(item) if isinstance(item, Mapping) else {key or "image": str(item)}
        return data if key is not None else data["image"]

    def preprocess(self, image: Any) -> torch.Tensor:
        """An already loaded, channel-first image in stored values through the geometry part (``Resize`` ...),
        without the loading transforms: stored units, ``(C, *spatial)``, on the predictor's device.

        Raises:
            ValueError: When the image violates the contract so that no class may be given (rank, channels,
                non-finite values); the message says which.
        """
        x = self._as_image(image)
        refusals = [f["message"] for f in self.contract.check(x) if f["severity"] == REFUSE]
        if refusals:
            raise ValueError("; ".join(refusals))
        key = self.split.image_key
        meta = MetaTensor(x)
        out = self._geometry({key: meta})[key] if key is not None else self._geometry(meta)
        return torch.as_tensor(out).as_subclass(torch.Tensor).float().to(self.device)

    def check(self, image: Any, modality: str | None = None, body_part: str | None = None) -> list[dict[str, str]]:
        """The input contract's violations by one image as read (stored values, channel first, before resampling),
        with its DICOM modality and body part when known; see :meth:`InputContract.check
        <monai_robust.bundle.contract.InputContract.check>`."""
        return self.contract.check(self._as_image(image), modality, body_part)

    def _as_image(self, image: Any) -> torch.Tensor:
        """A plain float tensor ``(C, *spatial)``; a 2D image read with a trailing singleton axis loses it."""
        x = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
        x = x.as_subclass(torch.Tensor).float()
        return x[..., 0] if self.spatial_dims == 2 and x.ndim == 4 and x.shape[-1] == 1 else x

    # -- predictions -------------------------------------------------------------------------------------------
    def predict(
        self,
        images: torch.Tensor,
        modality: str | None = None,
        body_part: str | None = None,
        flags: Sequence[list[dict[str, str]]] | None = None,
    ) -> list[dict[str, Any]]:
        """Class probabilities, contract flags and the guard's verdict for a batch in stored units.

        Args:
            images: ``(N, C, *spatial)`` stored values, e.g. :meth:`preprocess` or :meth:`load` outputs stacked.
            modality: the inputs' DICOM modality, when known (checked against the contract).
            body_part: the inputs' DICOM ``BodyPartExamined``, when known (a mismatch is flagged).
            flags: per image, the contract's violations found on the image as loaded, before the geometry part
                (``contract.check(loaded, modality, body_part)``): resampling hides an 8-bit image. Default: checked
                here on ``images``.

        Returns:
            One dict per image: ``probabilities`` (class -> float), ``predicted_class``, ``predicted_index``,
            ``guard`` (``{"adversarial_suspected", "score", "threshold"}`` or ``None``), ``contract`` (the
            violations, ``[]`` when none), ``refused`` (``True``: the class is withheld, ``probabilities`` and
            ``predicted_class`` are ``None``) and ``statements``.

        Raises:
            ValueError: When ``flags`` does not hold one list per image.
        """
        x = torch.as_tensor(images).as_subclass(torch.Tensor).to(self.device).float()
        if flags is None:
            flags = [self.contract.check(img, modality, body_part) for img in x]
        elif len(flags) != len(x):
            raise ValueError(f"flags must hold one list per image: {len(flags)} for {len(x)} images.")
        flags = [list(f) for f in flags]
        refused = [any(f["severity"] == REFUSE for f in fl) for fl in flags]
        keep = [i for i, r in enumerate(refused) if not r]
        probs: dict[int, torch.Tensor] = {}
        verdicts: dict[int, Any] = {}
        if keep:
            sub = x[keep]
            with torch.no_grad():
                p = torch.softmax(self.model(sub).float(), dim=1).cpu()
            probs = dict(zip(keep, p))
            if self.guard is not None:
                g_in = sub if self.guard_units == "stored" else self.model.to_model_units(sub)
                verdicts = dict(zip(keep, self.guard.verdicts(g_in)))
        names = self.class_names
        out = []
        for i in range(len(x)):
            rec: dict[str, Any] = {"probabilities": None, "predicted_class": None, "predicted_index": None}
            if i in probs:
                p = probs[i]
                rec = {
                    "probabilities": {c: float(v) for c, v in zip(names, p.tolist())},
                    "predicted_class": names[int(p.argmax())],
                    "predicted_index": int(p.argmax()),
                }
            rec.update(guard=verdicts.get(i), contract=flags[i], refused=refused[i], statements=self.statements)
            out.append(rec)
        return out

    def predict_files(self, items: Sequence[Mapping[str, Any] | str | os.PathLike], modality: str | None = None) -> list[dict[str, Any]]:
        """:meth:`predict` for inputs on disk, one at a time; the contract is checked on the stored values as read
        (:meth:`read`), and an input it refuses gets a refusal record instead of a forward pass (``{"image": ...,
        "refused": True, "contract": [...]}``). The modality (unless given) and the body part are read from each
        DICOM input's header."""
        out = []
        key = self.split.image_key
        for item in items:
            path = str(item["image"] if isinstance(item, Mapping) else item)
            data = self._reader(self._data(item))
            raw = _image(data, key)
            found, part = modality or header_value(raw.meta, "Modality"), header_value(raw.meta, "BodyPartExamined")
            flags = self.check(raw, found, part)  # on the stored values as read, before resampling
            if any(f["severity"] == REFUSE for f in flags):
                rec = {"probabilities": None, "predicted_class": None, "predicted_index": None, "guard": None}
                rec.update(contract=flags, refused=True, statements=self.statements)
            else:
                x = _image(self._geometry(data), key).as_subclass(torch.Tensor)
                rec = self.predict(x[None], flags=[flags])[0]
            if isinstance(item, Mapping) and "label" in item:
                rec["label"] = int(item["label"])
            out.append({"image": path, **rec})
        return out

    def __call__(self, image: Any) -> dict[str, Any]:
        """``predict(preprocess(image)[None])[0]``: one loaded channel-first image in, its prediction out."""
        return self.predict(self.preprocess(image)[None])[0]


def _image(out: Any, key: str | None) -> MetaTensor:
    """The image of a loading transform's output, as a float ``MetaTensor``."""
    x = out[key] if key is not None else out
    return x.float() if isinstance(x, MetaTensor) else MetaTensor(torch.as_tensor(x).float())


_TAGS = {"Modality": "00080060", "BodyPartExamined": "00180015"}


def header_value(meta: Mapping[str, Any], keyword: str) -> str | None:
    """A DICOM attribute (``"Modality"``, ``"BodyPartExamined"``) in a reader's metadata: this project's
    ``DicomReader`` stores it by keyword, MONAI's ``PydicomReader`` by tag (``"00080060"``); ``None`` when absent.

    Example::

        >>> header_value(LoadImage(image_only=True)("cr.dcm").meta, "Modality")
        'CR'
    """
    value = meta.get(keyword, meta.get(_TAGS.get(keyword, keyword))) if isinstance(meta, Mapping) else None
    if isinstance(value, Mapping):
        value = (value.get("Value") or [None])[0]
    return str(value) if value else None
