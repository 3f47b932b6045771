# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOM in the clinic: screen DICOM series with a trained bundle and its adversarial-input guard, report each series
as a DICOM Structured Report (TID 1500) plus JSON, and run as a DICOM storage node next to a PACS.

Modules: :mod:`.series` (finding, reading, selecting instances), :mod:`.screener` (decoding, predicting),
:mod:`.sr` (the SR), :mod:`.results` (result records and writing them), :mod:`.names` (safe output names),
:mod:`.peer` (AE titles, C-STORE), :mod:`.spool` (received instances on disk), :mod:`.node` (the storage SCP),
:mod:`.workflow` (``screen``/``serve`` as functions) and :mod:`.cli` (``python -m monai_robust.dicom``).
"""

from __future__ import annotations

from .names import is_valid_uid, result_stem, safe_uid
from .node import DicomNode, NodeRecord
from .peer import DeliveryStatus, DicomPeer, send_c_store, validate_ae_title
from .results import SeriesResult, result_to_json, write_result
from .screener import DicomScreener
from .series import MODALITY_TERMS, SeriesRules, find_dicom_files, non_image_reason, read_header, scan_inputs
from .sr import CODING_SCHEME, build_sr
from .workflow import DicomUsageError, load_screener, screen, serve

__all__ = [
    "CODING_SCHEME",
    "MODALITY_TERMS",
    "DeliveryStatus",
    "DicomNode",
    "DicomPeer",
    "DicomScreener",
    "DicomUsageError",
    "NodeRecord",
    "SeriesResult",
    "SeriesRules",
    "build_sr",
    "find_dicom_files",
    "is_valid_uid",
    "load_screener",
    "non_image_reason",
    "read_header",
    "result_stem",
    "result_to_json",
    "safe_uid",
    "scan_inputs",
    "screen",
    "send_c_store",
    "serve",
    "validate_ae_title",
    "write_result",
]
