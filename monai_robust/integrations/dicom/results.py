# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The result of screening one series, its JSON form, and writing it (DICOM SR + JSON) under safe, versioned names."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset

from monai_robust.integrations.dicom.names import claim_paths, result_stem

__all__ = ["SeriesResult", "result_to_json", "write_result"]

logger = logging.getLogger(__name__)


@dataclass
class SeriesResult:
    """The outcome of screening one series (or one unreadable file).

    Attributes:
        study_uid: StudyInstanceUID (``""`` for a file that could not be read).
        series_uid: SeriesInstanceUID (``""`` for a file that could not be read).
        status: ``"screened"`` (images predicted, none failed), ``"skipped"`` (nothing to screen: non-image
            objects, no instance matching the rules, images not for this model such as colour into a grey model),
            ``"not screened"`` (every selected image failed a sanity gate: constant, off-window; no class given) or
            ``"failed"`` (an unreadable file, or an image that could not be decoded or preprocessed; the images
            that worked are still in ``predictions`` and the SR).
        reason: a sentence for the log: why skipped or failed, or what was screened.
        predictions: per image, the dict of ``BundlePredictor.predict`` (its ``contract``: the input contract's
            flags) plus ``sop_instance_uid``, ``frame`` (1-based frame number of a multi-frame instance, else
            ``None``), ``sop_class_uid``, ``source`` (file path or ``None``), ``modality`` and ``body_part`` (the
            header values the contract was checked against), ``intensity_range`` ``[min, max]`` of the raw values
            and ``outside_intensity_window``.
        sr: the Structured Report (a highdicom ``ComprehensiveSR``), or ``None`` when nothing was predicted.
        summary: series-level numbers (images, class counts, mean probabilities, guard alarms, ...).
        errors: one message per file or image that failed, each naming the file (or SOP instance).
        skipped_instances: one message per instance left out (non-image, not matching the rules).
        sources: the file paths of the series' instances (empty for datasets given in memory).
        model: the model that screened it: ``name``, ``version``, ``class_names``, ``intensity_window``, ``units``.
        patient_id: PatientID of the series (part of the output names).
        partial: the series was cut off before it was complete (its association aborted, or the node stopped).
        not_screened: one message per image that got no verdict from a sanity gate, naming the file and reason.
        skipped_images: one message per image left out as not for this model (e.g. colour into a grey model).
        version: set by :func:`write_result`: 1, or n > 1 when earlier results of the same series exist.

    Example::

        >>> r = screener.screen_files(["../shared/data/dicom"])[0]
        >>> r.status, r.reason
        ('screened', '1 image(s) of 1 instance(s) screened')
    """

    study_uid: str
    series_uid: str
    status: str
    reason: str
    predictions: list[dict[str, Any]] = field(default_factory=list)
    sr: Dataset | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped_instances: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    patient_id: str = ""
    partial: bool = False
    not_screened: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    version: int | None = None

    @property
    def ok(self) -> bool:
        """``True`` unless the status is ``"failed"`` (a skipped series is not a failure)."""
        return self.status != "failed"


def _jsonable(value: Any) -> Any:
    """Numbers, tensors and paths as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def result_to_json(result: SeriesResult) -> dict[str, Any]:
    """The JSON sidecar of a result: the content of the SR (per image: finding, class probabilities, guard verdict,
    score and threshold, intensity check; the model's name and version) plus the status, the reason and the log.

    Args:
        result: a screening result.

    Returns:
        A JSON-serialisable dict (non-finite numbers become ``null``).

    Example::

        >>> record = result_to_json(result)
        >>> record["status"], record["images"][0]["predicted_class"]
        ('screened', 'normal')
    """
    sr = result.sr
    return _jsonable(
        {
            "patient_id": result.patient_id,
            "study_instance_uid": result.study_uid,
            "series_instance_uid": result.series_uid,
            "status": result.status,
            "reason": result.reason,
            "partial": result.partial,
            "version": result.version,
            "model": result.model,
            "outside_intensity_window": any(p["outside_intensity_window"] for p in result.predictions),
            "images": result.predictions,
            "summary": result.summary,
            "errors": result.errors,
            "not_screened": result.not_screened,
            "skipped_images": result.skipped_images,
            "skipped_instances": result.skipped_instances,
            "sources": result.sources,
            "sr": None
            if sr is None
            else {
                "sop_instance_uid": str(sr.SOPInstanceUID),
                "series_instance_uid": str(sr.SeriesInstanceUID),
                "sop_class_uid": str(sr.SOPClassUID),
            },
        }
    )


def write_result(result: SeriesResult, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes a result: ``<stem>.SR.dcm`` (when there is an SR) and the ``<stem>.json`` sidecar, never overwriting.

    The stem is :func:`~monai_robust.integrations.dicom.names.result_stem` of (PatientID, StudyInstanceUID,
    SeriesInstanceUID, model name): only a valid SeriesInstanceUID appears as such, anything else is hashed, and
    every path is checked to stay inside ``output_dir``. A result without a series (an unreadable file) is written
    as ``unreadable-<hash of the path>.json``. When files of the same stem exist (a series screened again, e.g.
    grown in a later association), the next version ``<stem>.v2.*`` is written, ``result.version`` set, and a
    warning logged; nothing is overwritten.

    Args:
        result: a screening result.
        output_dir: the folder (created if needed).

    Returns:
        ``{"sr": path, "json": path}`` (``"sr"`` only when the result has an SR).

    Raises:
        ValueError: When ``output_dir`` exists and is not a folder.

    Example::

        >>> write_result(result, "out/")
        {'sr': PosixPath('out/1.2.3_4f0c2b1a9e.SR.dcm'), 'json': PosixPath('out/1.2.3_4f0c2b1a9e.json')}
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir={str(out)!r} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    if result.series_uid:
        stem = result_stem(result.patient_id, result.study_uid, result.series_uid, result.model.get("name", ""))
    else:
        stem = "unreadable-" + hashlib.sha1("|".join(result.sources or result.errors).encode()).hexdigest()[:12]
    suffixes = (".SR.dcm", ".json") if result.sr is not None else (".json",)
    claimed, result.version = claim_paths(out, stem, suffixes)
    if result.version > 1:
        logger.warning(
            "series %s was written before under %s: this result is version %d (%s), the earlier one is kept.",
            result.series_uid or "<unreadable file>",
            out / stem,
            result.version,
            claimed[".json"].name,
        )
    paths: dict[str, Path] = {}
    if result.sr is not None:
        paths["sr"] = claimed[".SR.dcm"]
        result.sr.save_as(paths["sr"], enforce_file_format=True)
    record = result_to_json(result)
    if "sr" in paths:
        record["sr"]["path"] = str(paths["sr"])
    paths["json"] = claimed[".json"]
    paths["json"].write_text(json.dumps(record, indent=2) + "\n")
    return paths
