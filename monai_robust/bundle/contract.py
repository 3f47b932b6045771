# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A bundle's input contract: what it accepts (modality, body part, channels, stored-value range / bit depth, spatial
dims) and what its results must say (not for clinical use, trained on synthetic data). Inputs outside the contract
are refused (no class is given) or flagged in every output, never scored silently.

The contract is read from ``configs/metadata.json``, ``network_data_format.inputs.image``: ``modality`` (a DICOM
modality code such as ``"CR"``, ``"CT"``; several separated by commas), ``body_part`` (a DICOM ``BodyPartExamined``
code such as ``"CHEST"``), ``num_channels``, ``stored_value_range`` ``[low, high]``, ``bits_stored``; and top-level ``intended_use`` and ``data_source``. A foreign bundle that lacks them falls back to
what its config implies: channels from ``network_def#in_channels``, dims from ``network_def#spatial_dims``, the
8-bit range for ``"RGB"`` data or an ``"intensity [0-255]"`` description, the window of an ``intensity_map``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from monai_robust.bundle.loader import LoadedBundle

__all__ = ["REFUSE", "FLAG", "InputContract", "contract_of"]

REFUSE = "refuse"
"""Severity of a violation that withholds the prediction."""
FLAG = "flag"
"""Severity of a violation reported beside the prediction."""

_UNKNOWN_MODALITY = {"", "none", "regular", "unknown", "any"}
_EIGHT_BIT = re.compile(r"\[\s*0\s*[-,]\s*255\s*\]")


@dataclass
class InputContract:
    """What a bundle accepts, and the statements its outputs carry.

    Args:
        channels: input channels.
        spatial_dims: 2 or 3.
        stored_range: ``(low, high)`` of the stored values the bundle expects (``None``: not declared).
        bits_stored: bit depth of the stored values, when declared or implied (8 for ``(0, 255)``).
        modality: DICOM modality code(s) accepted (``None``: any).
        body_part: the body part, when declared: a DICOM ``BodyPartExamined`` code (``"CHEST"``); an input whose
            header names another is flagged.
        statements: what every result must carry (intended use, synthetic training data).

    Example::

        >>> c = InputContract(channels=1, spatial_dims=2, stored_range=(0, 4095), bits_stored=12, modality=("CR",))
        >>> [f["code"] for f in c.check(torch.full((1, 8, 8), 3.0))]
        ['constant_image', 'low_bit_depth']
    """

    channels: int
    spatial_dims: int
    stored_range: tuple[float, float] | None = None
    bits_stored: int | None = None
    modality: tuple[str, ...] | None = None
    body_part: str | None = None
    statements: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got channels={self.channels!r}.")
        if self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got spatial_dims={self.spatial_dims!r}.")
        if self.stored_range is not None:
            lo, hi = (float(v) for v in self.stored_range)
            if not lo < hi:
                raise ValueError(f"stored_range must satisfy low < high, got stored_range={self.stored_range!r}.")
            self.stored_range = (lo, hi)

    def scan(self, images: torch.Tensor) -> dict[str, int]:
        """How many images of a batch ``(N, C, *spatial)`` violate each rule: ``{code: count}`` (empty: none)."""
        counts: dict[str, int] = {}
        for img in torch.as_tensor(images).as_subclass(torch.Tensor):
            for f in self.check(img):
                counts[f["code"]] = counts.get(f["code"], 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The contract as JSON-ready values (for reports and prediction outputs)."""
        out = asdict(self)
        out["stored_range"] = None if self.stored_range is None else list(self.stored_range)
        out["modality"] = None if self.modality is None else list(self.modality)
        return out

    def check(
        self, image: torch.Tensor, modality: str | None = None, body_part: str | None = None
    ) -> list[dict[str, str]]:
        """Violations of the contract by one loaded image in stored units, channel first.

        Args:
            image: ``(C, *spatial)`` stored values, after the bundle's loading part (before its geometry part: a
                resampled 8-bit image no longer looks 8-bit).
            modality: the input's DICOM modality, when known (e.g. from the DICOM header).
            body_part: the input's DICOM ``BodyPartExamined``, when known; one that differs from the contract's is
                a flag, not a refusal (the attribute is often missing or wrong in practice).

        Returns:
            ``[{"code", "severity", "message"}]``: ``severity`` is :data:`REFUSE` (no class may be given) or
            :data:`FLAG` (reported beside the class). Empty when the image fits the contract.
        """
        x = torch.as_tensor(image).as_subclass(torch.Tensor).detach().float()
        found: list[dict[str, str]] = []

        def add(code: str, severity: str, message: str) -> None:
            found.append({"code": code, "severity": severity, "message": message})

        if self.modality is not None and modality and modality.upper() not in self.modality:
            add("modality", REFUSE, f"modality {modality!r} is not one the bundle was trained on ({', '.join(self.modality)}).")
        if self.body_part and body_part and body_part.strip().upper() != self.body_part.strip().upper():
            add("body_part", FLAG, f"BodyPartExamined {body_part!r} differs from the bundle's body part {self.body_part!r}.")
        if x.ndim != self.spatial_dims + 1:
            add("spatial_dims", REFUSE, f"image of shape {tuple(x.shape)} does not fit this {self.spatial_dims}D bundle: expected channel-first ({self.channels}, {', '.join(['spatial'] * self.spatial_dims)}).")
            return found
        if x.shape[0] != self.channels:
            add("channels", REFUSE, f"image of shape {tuple(x.shape)} has {x.shape[0]} channel(s), the bundle expects {self.channels}.")
        if not bool(torch.isfinite(x).all()):
            add("non_finite", REFUSE, "image holds NaN or Inf values.")
            return found
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            add("constant_image", FLAG, f"constant image (every value {lo:g}): there is nothing to classify.")
        if self.stored_range is not None:
            r_lo, r_hi = self.stored_range
            if lo < r_lo or hi > r_hi:
                add("stored_range", FLAG, f"values {lo:g}..{hi:g} leave the stored range {r_lo:g}..{r_hi:g} the bundle expects.")
            if r_hi - r_lo > 255 and lo >= 0 and hi <= 255 and hi > lo and bool((x == x.round()).all()):
                bits = f"{self.bits_stored}-bit" if self.bits_stored else f"{r_lo:g}..{r_hi:g}"
                add("low_bit_depth", FLAG, f"values span {lo:g}..{hi:g} like 8-bit data, but the bundle expects {bits} stored values.")
        return found


def _as_range(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def _statements(metadata: Mapping[str, Any]) -> list[str]:
    out = []
    use = str(metadata.get("intended_use", "")).strip()
    if use:
        out.append(use)
    source = str(metadata.get("data_source", "")).strip()
    if "synthetic" in source.lower():
        out.append(f"Trained on synthetic data: {source}.")
    return out


def contract_of(bundle: LoadedBundle) -> InputContract:
    """The input contract of a loaded bundle (metadata first, then what its config implies).

    Example::

        >>> contract_of(load_bundle("endoscopic_inbody_classification")).stored_range
        (0.0, 255.0)
    """
    meta = bundle.metadata
    inputs = meta.get("network_data_format", {}).get("inputs", {})
    image = dict(inputs.get(bundle.image_key, next(iter(inputs.values()), {}))) if inputs else {}
    channels = int(image.get("num_channels") or bundle.in_channels)
    stored = _as_range(image.get("stored_value_range"))
    imap = bundle.get("intensity_map") if stored is None else None
    if getattr(imap, "physical_range", None) is not None:
        stored = tuple(float(v) for v in imap.physical_range)  # type: ignore[union-attr]
    described = " ".join(str(meta.get(k, "")) for k in ("data_type", "image_classes"))
    if stored is None and (_EIGHT_BIT.search(described) or str(meta.get("data_type", "")).upper() == "RGB"):
        stored = (0.0, 255.0)
    bits = image.get("bits_stored")
    if bits is None and stored is not None and stored[0] == 0 and float(stored[1] + 1).is_integer():
        n = int(stored[1] + 1)
        bits = n.bit_length() - 1 if n & (n - 1) == 0 else None
    modality = str(image.get("modality", "")).strip()
    modalities = None if modality.lower() in _UNKNOWN_MODALITY else tuple(m.strip().upper() for m in modality.split(","))
    return InputContract(
        channels=channels,
        spatial_dims=bundle.spatial_dims,
        stored_range=stored,
        bits_stored=None if bits is None else int(bits),
        modality=modalities,
        body_part=str(image["body_part"]).strip().upper() if image.get("body_part") else None,
        statements=_statements(meta),
    )
