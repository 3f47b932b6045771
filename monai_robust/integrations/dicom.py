# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Screening DICOM studies with a trained bundle: series selection, prediction with the adversarial-input guard, and
a DICOM Structured Report (highdicom, TID 1500 Measurement Report) plus a JSON sidecar for each series.

The flow for a folder (or for datasets received over the network, see :meth:`DicomScreener.screen_datasets`):

1. every file is read with pydicom (large elements deferred, so a big folder is not held in memory); a file that is
   not DICOM or is unreadable becomes a ``"failed"`` result naming its path, and the run goes on;
2. instances are grouped by ``(StudyInstanceUID, SeriesInstanceUID)``; non-image objects (SR, SEG, KOS, PR, RT, no
   Pixel Data) are ``"skipped"`` with the reason, and :class:`SeriesRules` (Modality, ImageType, BodyPartExamined)
   pick the instances to screen; a series with none is ``"skipped"`` with the rule that excluded it;
3. pixel data are decoded by :class:`~monai_robust.data.image_reader.DicomReader`'s conventions (modality rescale,
   MONOCHROME1 inverted, JPEG 2000 through pylibjpeg): for a 2D bundle each frame of each instance is one image,
   for a 3D bundle each multi-frame instance, or the position-sorted stack of single-frame instances, is one volume;
4. :class:`~monai_robust.bundle.predictor.BundlePredictor` preprocesses (the bundle's intensity window, as in
   training; an image with values outside it is flagged ``outside_intensity_window``), predicts and runs the guard;
   an image that cannot be decoded or preprocessed (e.g. RGB into a one-channel model) is reported with its path
   and reason and the series is ``"failed"``, the images that worked still count;
5. :func:`build_sr` writes one Comprehensive SR per series with one measurement group per image: the finding
   (predicted class), every class probability, the guard's verdict, score and threshold, whether pixel values lie
   outside the model's intensity window, and the model's name and version (TID 4019 algorithm identification);
   the source instances are referenced by the groups and by the Current Requested Procedure Evidence.

Inputs are only read. Codes that DICOM does not define use the private coding scheme ``99MONAIROBUST``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.utils import optional_import
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.data.image_reader import DicomReader

hd, _HAS_HIGHDICOM = optional_import("highdicom")

__all__ = [
    "CODING_SCHEME",
    "DicomScreener",
    "SeriesResult",
    "SeriesRules",
    "build_sr",
    "find_dicom_files",
    "non_image_reason",
    "result_to_json",
    "write_result",
]

logger = logging.getLogger(__name__)

CODING_SCHEME = "99MONAIROBUST"  # private coding scheme for the concepts DICOM does not define
SR_SERIES_NUMBER = 990
_DEFER_SIZE = "64 KB"  # elements larger than this (pixel data) are read from the file when used
_NON_IMAGE_MODALITIES = frozenset("SR SEG KO PR RTSTRUCT RTPLAN RTRECORD RTDOSE REG DOC FID RWV PLAN".split())
_NON_IMAGE_SOP_WORDS = (
    "SR Storage",
    "Segmentation Storage",
    "Key Object Selection",
    "Presentation State",
    "RT Structure Set",
    "RT Plan",
    "Registration Storage",
    "Encapsulated",
    "Raw Data",
    "Waveform",
    "Parametric Map",
)
_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
_PIXEL_TAGS = frozenset(
    pydicom.datadict.tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)
_TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def _norm(values: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """Upper-case stripped strings, ``None`` kept (= any)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = tuple(str(v).strip().upper() for v in values)
    if not out or any(not v for v in out):
        raise ValueError(f"rule values must be non-empty strings, got {list(values)!r}.")
    return out


@dataclass(frozen=True)
class SeriesRules:
    """Which instances of a study are screened.

    An instance is selected when its ``Modality`` is one of ``modalities``, its ``ImageType`` holds every value of
    ``image_types``, and its ``BodyPartExamined`` is one of ``body_parts`` (all case-insensitive; ``None`` = any).
    A series is screened when at least one of its instances is selected; the others are left out and listed.

    Args:
        modalities: e.g. ``("CR", "DX")``; ``None`` accepts any modality.
        image_types: values that must all appear in ImageType, e.g. ``("ORIGINAL", "PRIMARY")``; ``None`` = any.
        body_parts: e.g. ``("CHEST",)``; an instance without BodyPartExamined is then not selected. ``None`` = any.

    Raises:
        ValueError: When a rule is given as an empty list or holds an empty string.

    Example::

        >>> rules = SeriesRules(modalities=("CR", "DX"), body_parts=("CHEST",))
        >>> rules.mismatch(pydicom.dcmread("../shared/data/dicom/RG1_J2KI.dcm", stop_before_pixels=True)) is None
        True
    """

    modalities: tuple[str, ...] | None = ("CR", "DX")
    image_types: tuple[str, ...] | None = None
    body_parts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("modalities", "image_types", "body_parts"):
            object.__setattr__(self, name, _norm(getattr(self, name)))

    def mismatch(self, ds: Dataset) -> str | None:
        """Why ``ds`` is not selected, or ``None`` when it is.

        Args:
            ds: a DICOM dataset (header is enough).

        Returns:
            A sentence naming the attribute, its value and the rule, or ``None``.
        """
        if self.modalities is not None:
            modality = str(ds.get("Modality", "") or "").strip().upper()
            if modality not in self.modalities:
                return f"Modality {modality or '<missing>'!r} is not one of {list(self.modalities)}"
        if self.image_types is not None:
            image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
            missing = [v for v in self.image_types if v not in image_type]
            if missing:
                return f"ImageType {image_type or '<missing>'} lacks {missing}"
        if self.body_parts is not None:
            part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
            if part not in self.body_parts:
                return f"BodyPartExamined {part or '<missing>'!r} is not one of {list(self.body_parts)}"
        return None

    def to_dict(self) -> dict[str, list[str] | None]:
        """The rules as a JSON-serialisable record."""
        return {
            k: None if v is None else list(v)
            for k, v in (
                ("modalities", self.modalities),
                ("image_types", self.image_types),
                ("body_parts", self.body_parts),
            )
        }


@dataclass
class SeriesResult:
    """The outcome of screening one series (or one unreadable file).

    Attributes:
        study_uid: StudyInstanceUID (``""`` for a file that could not be read).
        series_uid: SeriesInstanceUID (``""`` for a file that could not be read).
        status: ``"screened"`` (every selected image predicted), ``"skipped"`` (nothing to screen: non-image
            objects, no instance matching the rules) or ``"failed"`` (an unreadable file, or an image that could
            not be decoded or preprocessed; the images that worked are still in ``predictions`` and the SR).
        reason: a sentence for the log: why skipped or failed, or what was screened.
        predictions: per image, the dict of ``BundlePredictor.predict`` plus ``sop_instance_uid``, ``frame``
            (1-based frame number of a multi-frame instance, else ``None``), ``sop_class_uid``, ``source`` (file
            path or ``None``), ``intensity_range`` ``[min, max]`` of the raw values and ``outside_intensity_window``.
        sr: the Structured Report (a highdicom ``ComprehensiveSR``), or ``None`` when nothing was predicted.
        summary: series-level numbers (images, class counts, mean probabilities, guard alarms, ...).
        errors: one message per file or image that failed, each naming the file (or SOP instance).
        skipped_instances: one message per instance left out (non-image, not matching the rules).
        sources: the file paths of the series' instances (empty for datasets given in memory).
        model: the model that screened it: ``name``, ``version``, ``class_names``, ``intensity_window``, ``units``.

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

    @property
    def ok(self) -> bool:
        """``True`` unless the status is ``"failed"`` (a skipped series is not a failure)."""
        return self.status != "failed"


def _name(ds: Dataset) -> str:
    """The file a dataset came from, or its SOPInstanceUID, for messages."""
    filename = getattr(ds, "filename", None)
    if isinstance(filename, (str, os.PathLike)) and str(filename):
        return str(filename)
    return f"SOP instance {ds.get('SOPInstanceUID', '<no SOPInstanceUID>')}"


def non_image_reason(ds: Dataset) -> str | None:
    """Why ``ds`` is not an image the screener can read (SR, SEG, KOS, PR, RT, ..., or no Pixel Data), or ``None``.

    Args:
        ds: a DICOM dataset (a header read with deferred pixel data is enough).

    Returns:
        A sentence naming the SOP class and Modality, or ``None`` for an image object.

    Example::

        >>> non_image_reason(pydicom.dcmread("report.SR.dcm"))
        "non-image object (SOP class 'Comprehensive SR Storage', Modality 'SR')"
    """
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", str(sop)) if sop is not None else "<missing>"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    what = f"SOP class {sop_name!r}, Modality {modality or '<missing>'!r}"
    if modality in _NON_IMAGE_MODALITIES or any(w in str(sop_name) for w in _NON_IMAGE_SOP_WORDS):
        return f"non-image object ({what})"
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return f"non-image object: no Pixel Data ({what})"
    return None


def _image_problem(ds: Dataset) -> str | None:
    """Why an image object cannot be decoded (missing image-pixel attributes, truncated pixel data), or ``None``."""
    missing = [k for k in _IMAGE_ATTRIBUTES if k not in ds]
    if missing:
        return f"image attributes missing ({', '.join(missing)}); the header is incomplete or corrupt"
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None and not tsyntax.is_encapsulated and "PixelData" in ds:
        try:
            expected = pydicom.pixels.utils.get_expected_length(ds, unit="bytes")
            got = len(ds.PixelData)
        except Exception as e:  # deferred read of a file that has gone or changed
            return f"pixel data unreadable ({type(e).__name__}: {e})"
        if got < expected:
            return f"truncated pixel data, {got} of {expected} bytes"
    return None


def find_dicom_files(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Files to read: each file as given, and every file under each folder (recursive, sorted), skipping hidden
    files and ``DICOMDIR``.

    Args:
        paths: files and folders.

    Returns:
        The file paths (non-DICOM files included: reading them reports them).

    Raises:
        ValueError: When a path does not exist.

    Example::

        >>> len(find_dicom_files("../shared/data/dicom"))
        10
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and f.name != "DICOMDIR"
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder.")
    return out


def _read_header(path: Path) -> Dataset:
    """``pydicom.dcmread`` with large elements deferred; errors name the file."""
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
    except InvalidDicomError as e:
        raise ValueError(f"{path}: not a DICOM file ({e}).") from e
    except Exception as e:  # truncated/corrupt header: EOFError, struct.error, ...
        raise ValueError(f"{path}: unreadable DICOM file ({type(e).__name__}: {e}).") from e
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID") if not ds.get(k)]
    if missing:
        raise ValueError(f"{path}: DICOM file without {', '.join(missing)}; the header is incomplete or corrupt.")
    return ds


def _frames(ds: Dataset, reader: DicomReader) -> np.ndarray:
    """Decoded frames ``(frames, rows, cols[, 3])`` float32 (rescaled, MONOCHROME1 inverted) in file order."""
    arr, _, _, _ = reader._frames(ds)  # frame order kept (get_data sorts frames by position)
    return arr


def _channel_first(frame: np.ndarray) -> np.ndarray:
    """``(rows, cols[, 3])`` -> ``(C, cols, rows)``: the layout of ``LoadImage(ensure_channel_first=True)`` with
    :class:`DicomReader` (``swap_ij``), which the bundles are trained on."""
    return frame.transpose(2, 1, 0) if frame.ndim == 3 else frame.T[None]


def _sort_slices(datasets: list[Dataset]) -> list[Dataset]:
    """Single-frame slices ordered along the slice normal (InstanceNumber when a position is missing)."""
    iop = [ds.get("ImageOrientationPatient") for ds in datasets]
    ipp = [ds.get("ImagePositionPatient") for ds in datasets]
    if all(v is not None for v in iop) and all(v is not None for v in ipp):
        o = np.asarray([float(v) for v in iop[0]]).reshape(2, 3)
        normal = np.cross(o[0], o[1])
        key = [float(np.asarray([float(v) for v in p]) @ normal) for p in ipp]
    else:
        key = [float(ds.get("InstanceNumber", 0) or 0) for ds in datasets]
    return [datasets[i] for i in np.argsort(key, kind="stable")]


def _evidence_header(ds: Dataset) -> Dataset:
    """A header-only copy of a source instance for the SR (the source is not touched): no pixel data, and the
    patient and study attributes that DICOM makes Type 2 (present, possibly empty) added empty where a file lacks
    them, as highdicom copies them into the report."""
    header = Dataset()
    for tag in ds.keys():
        if tag not in _PIXEL_TAGS:
            header.add(ds[tag])
    for key in _TYPE2_PATIENT_STUDY:
        if key not in header:
            setattr(header, key, None)
    return header


def _code(value: str, meaning: str) -> Any:
    """A concept of the private coding scheme (code value <= 16 characters, meaning <= 64)."""
    return hd.sr.CodedConcept(value=value[:16], scheme_designator=CODING_SCHEME, meaning=meaning[:64])


def build_sr(
    datasets: Sequence[Dataset],
    predictions: Sequence[dict[str, Any]],
    model_name: str,
    model_version: str,
    class_names: Sequence[str],
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    statements: Sequence[str] = (),
) -> Dataset:
    """A Comprehensive SR (TID 1500 Measurement Report) for one series' predictions.

    One measurement group per image, each with: Finding = the predicted class; one measurement
    "Probability of <class>" (UCUM ``1``) per class; when the guard ran, the qualitative evaluation
    "Adversarial input suspected" (SCT Yes/No) and the measurements "Adversarial detector score" and
    "Adversarial detector threshold"; "Intensity outside model window" (Yes/No); the algorithm (TID 4019: model
    name and version); the source image (and frame). The report references ``datasets`` in its Current Requested
    Procedure Evidence (same study) and copies the patient and study attributes from the first; it gets a new
    SeriesInstanceUID and SOPInstanceUID.

    Args:
        datasets: the source instances (headers are enough), all of one study.
        predictions: per-image dicts as in :attr:`SeriesResult.predictions`; each names its ``sop_instance_uid``
            (or ``sop_instance_uids`` for a volume) among ``datasets``.
        model_name, model_version: recorded as the algorithm and the observer device.
        class_names: the model's classes, in output order.
        series_instance_uid, sop_instance_uid: UIDs of the report (new ones by default).
        statements: what the bundle's metadata says every result must carry ("not for clinical use", "trained on
            synthetic data"); one TEXT item "Statement" each in the report's root container. Predictions refused by
            the bundle's input contract (``refused``) get no measurement group but one TEXT item
            "Input outside the model's contract" with the reasons.

    Returns:
        The SR dataset (``highdicom.sr.ComprehensiveSR``).

    Raises:
        ImportError: When highdicom (the ``dicom`` extra) is not installed.
        ValueError: When ``datasets`` or ``predictions`` is empty, or a prediction references an instance that is
            not in ``datasets``.

    Example::

        >>> sr = build_sr([ds], result.predictions, "Robust chest X-ray classification", "0.1.0", ["normal", "lesion"])
        >>> sr.save_as("report.SR.dcm")
    """
    if not _HAS_HIGHDICOM:
        raise ImportError("building a DICOM SR needs highdicom: pip install 'monai_robust[dicom]'.")
    from pydicom.sr.codedict import codes

    if not datasets or not predictions:
        raise ValueError(f"build_sr needs source datasets and predictions, got {len(datasets)} and {len(predictions)}.")
    datasets = [_evidence_header(ds) for ds in datasets]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    algorithm = hd.sr.AlgorithmIdentification(
        name=str(model_name)[:64] or "unnamed model", version=str(model_version)[:64] or "unknown"
    )
    no_units = codes.UCUM.NoUnits
    groups = []
    texts = [(_code("STATEMENT", "Statement"), str(t)) for t in statements]
    for i, pred in enumerate(predictions):
        if pred.get("refused"):
            reasons = "; ".join(f["message"] for f in pred.get("contract", []))
            texts.append((_code("OFFCONTRACT", "Input outside the model's contract"), f"image {i + 1}: {reasons}"))
            continue
        uids = pred.get("sop_instance_uids") or [pred["sop_instance_uid"]]
        unknown = [u for u in uids if u not in by_uid]
        if unknown:
            raise ValueError(
                f"prediction {i} references SOP instance(s) {unknown} that are not among the source datasets."
            )
        frame = pred.get("frame")
        sources = [
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=by_uid[u].SOPClassUID,
                referenced_sop_instance_uid=u,
                referenced_frame_numbers=[int(frame)] if frame else None,
            )
            for u in uids
        ]
        measurements = [
            hd.sr.Measurement(
                name=_code(f"PROB{k}", f"Probability of {c}"),
                value=float(pred["probabilities"][c]),
                unit=no_units,
                algorithm_id=algorithm,
            )
            for k, c in enumerate(class_names)
        ]
        evaluations = [
            hd.sr.QualitativeEvaluation(
                _code("OUTWINDOW", "Intensity outside model window"),
                codes.SCT.Yes if pred.get("outside_intensity_window") else codes.SCT.No,
            )
        ]
        guard = pred.get("guard")
        if guard is not None:
            evaluations.insert(
                0,
                hd.sr.QualitativeEvaluation(
                    _code("ADVSUSPECT", "Adversarial input suspected"),
                    codes.SCT.Yes if guard["adversarial_suspected"] else codes.SCT.No,
                ),
            )
            for value, meaning, key in (
                ("ADVSCORE", "Adversarial detector score", "score"),
                ("ADVTHRESHOLD", "Adversarial detector threshold", "threshold"),
            ):
                if math.isfinite(float(guard[key])):
                    measurements.append(
                        hd.sr.Measurement(
                            name=_code(value, meaning), value=float(guard[key]), unit=no_units, algorithm_id=algorithm
                        )
                    )
        label = (
            f"image {i + 1}: {uids[0]}"
            + (f" frame {frame}" if frame else "")
            + (f" (+{len(uids) - 1} slices)" if len(uids) > 1 else "")
        )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=label[:64]),
                finding_type=_code(f"CLASS{int(pred['predicted_index'])}", str(pred["predicted_class"])),
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations,
                source_images=sources,
            )
        )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["monai_robust", str(model_name), str(model_version)]),
        name="monai_robust screening",
        manufacturer_name="monai_robust",
        model_name=f"{model_name} {model_version}"[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    try:  # the image library needs per-modality attributes (e.g. PixelSpacing) that real files may lack
        library = list(datasets)
        hd.sr.ImageLibrary(library)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        logger.debug(
            "SR without image library entries (%s: %s); images are referenced by the groups and the evidence.",
            type(e).__name__,
            e,
        )
        library = None
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging"),
        imaging_measurements=groups,
        referenced_images=library,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=list(datasets),
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="monai_robust",
        is_complete=True,
        series_description=f"AI screening: {model_name}"[:64],
    )
    for name, text in texts:
        sr.ContentSequence.append(
            hd.sr.TextContentItem(name=name, value=text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    return sr


class DicomScreener:
    """Screens DICOM series with a trained bundle and its guard, and reports each series as a DICOM SR.

    Args:
        predictor: a :class:`~monai_robust.bundle.predictor.BundlePredictor`, or a bundle folder to build one from.
        rules: which instances to screen (default :class:`SeriesRules` ``()``: CR and DX).
        batch_size: images per forward pass of the screener (not the bundle's ``batch_size``).
        device: for a bundle folder: the torch device (default: the bundle's).
        ckpt_file: for a bundle folder: the weights (default: the bundle's, the hardened model when present).
        overrides: for a bundle folder: config ids to override, passed to ``BundlePredictor`` (e.g.
            ``{"bundle_root": ..., "image_size": 32}``).

    Raises:
        ValueError: When ``rules`` is not a :class:`SeriesRules` or ``batch_size`` < 1; from
            ``BundlePredictor`` for bad overrides.
        FileNotFoundError: From ``BundlePredictor`` when the bundle has no trained checkpoint.

    Example::

        >>> rules = SeriesRules(modalities=("CR", "DX"))
        >>> screener = DicomScreener("bundles/robust_xray_classification", rules, overrides={"bundle_root": "run1"})
        >>> for r in screener.screen_files(["incoming/"]):
        ...     write_result(r, "out/")
    """

    def __init__(
        self,
        predictor: Any,
        rules: SeriesRules | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        ckpt_file: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(predictor, (str, os.PathLike)):
            predictor = BundlePredictor(predictor, ckpt_file=ckpt_file, device=device, **(overrides or {}))
        elif overrides or device is not None or ckpt_file is not None:
            raise ValueError(
                f"device, ckpt_file and overrides apply to a bundle folder only, got a {type(predictor).__name__} "
                f"with device={device!r}, ckpt_file={ckpt_file!r}, overrides={overrides!r}."
            )
        rules = SeriesRules() if rules is None else rules
        if not isinstance(rules, SeriesRules):
            raise ValueError(f"rules must be a SeriesRules, got {type(rules).__name__}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got batch_size={batch_size!r}.")
        self.predictor = predictor
        self.rules = rules
        self.batch_size = batch_size
        self.reader = DicomReader()
        window = getattr(getattr(predictor, "intensity_map", None), "physical_range", None)
        self.model_info: dict[str, Any] = {
            "name": str(predictor.name),
            "version": str(predictor.version),
            "class_names": list(predictor.class_names),
            "spatial_dims": int(predictor.spatial_dims),
            "intensity_window": None if window is None else list(window),
            "intensity_units": getattr(getattr(predictor, "intensity_map", None), "units", None),
            "guard": getattr(predictor, "guard", None) is not None,
        }

    # -- entry points -------------------------------------------------------------------------------------------

    def screen_files(self, paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[SeriesResult]:
        """Screens the DICOM files in ``paths`` (files and folders, recursive).

        Args:
            paths: files and folders.

        Returns:
            One :class:`SeriesResult` per series found, then one ``"failed"`` result per unreadable file (its
            ``errors`` name the path).

        Raises:
            ValueError: When a path does not exist.
        """
        datasets, unreadable = [], []
        for f in find_dicom_files(paths):
            try:
                datasets.append(_read_header(f))
            except ValueError as e:
                logger.error("%s", e)
                unreadable.append(
                    SeriesResult("", "", "failed", str(e), errors=[str(e)], sources=[str(f)], model=self.model_info)
                )
        return self.screen_datasets(datasets) + unreadable

    def screen_datasets(self, datasets: Sequence[Dataset]) -> list[SeriesResult]:
        """Screens datasets of any mix of studies and series (e.g. received by a storage SCP).

        Args:
            datasets: pydicom datasets with pixel data (or deferred pixel data).

        Returns:
            One :class:`SeriesResult` per ``(StudyInstanceUID, SeriesInstanceUID)``, in order of first appearance;
            a dataset without these UIDs gives a ``"failed"`` result of its own.
        """
        series: dict[tuple[str, str], list[Dataset]] = {}
        bad: list[SeriesResult] = []
        for ds in datasets:
            study, ser = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
            if not study or not ser:
                msg = f"{_name(ds)}: no StudyInstanceUID/SeriesInstanceUID, cannot be grouped into a series."
                logger.error("%s", msg)
                bad.append(
                    SeriesResult(
                        study,
                        ser,
                        "failed",
                        msg,
                        errors=[msg],
                        sources=[s for s in [_src(ds)] if s],
                        model=self.model_info,
                    )
                )
                continue
            series.setdefault((study, ser), []).append(ds)
        results = [self._screen_series(study, ser, members) for (study, ser), members in series.items()]
        for study in dict.fromkeys(s for s, _ in series):
            if all(r.status == "skipped" for r in results if r.study_uid == study):
                logger.info("study %s: no series matches the rules %s; nothing screened.", study, self.rules.to_dict())
        return results + bad

    # -- one series ---------------------------------------------------------------------------------------------

    def _screen_series(self, study: str, series: str, members: list[Dataset]) -> SeriesResult:
        """Selection, prediction and SR of one series."""
        result = SeriesResult(
            study, series, "skipped", "", sources=[s for s in map(_src, members) if s], model=self.model_info
        )
        selected: list[Dataset] = []
        seen: set[str] = set()
        for ds in members:
            uid = str(ds.get("SOPInstanceUID", ""))
            why = non_image_reason(ds) or self.rules.mismatch(ds)
            if why is None and uid in seen:
                why = f"duplicate of SOP instance {uid} (screened once)"
            if why is None:
                seen.add(uid)
                selected.append(ds)
            else:
                result.skipped_instances.append(f"{_name(ds)}: {why}")
        if not selected:
            reasons = sorted({m.split(": ", 1)[1] for m in result.skipped_instances})
            result.reason = f"no instance to screen: {'; '.join(reasons)}"
            logger.info("series %s (study %s) skipped: %s", series, study, result.reason)
            return self._finish(result, [])
        images = self._images(selected, result.errors)
        result.predictions = self._predict(images, result.errors)
        screened = {u for p in result.predictions for u in (p.get("sop_instance_uids") or [p["sop_instance_uid"]])}
        if result.predictions:
            try:
                p = self.predictor
                evidence = [ds for ds in selected if str(ds.SOPInstanceUID) in screened]
                result.sr = build_sr(
                    evidence, result.predictions, p.name, p.version, p.class_names,
                    statements=getattr(p, "statements", ()),
                )
            except Exception as e:  # never let one series stop the run
                result.errors.append(f"series {series}: building the SR failed ({type(e).__name__}: {e})")
        n_img, n_inst = len(result.predictions), len(screened)
        if result.errors:
            result.status = "failed"
            result.reason = f"{len(result.errors)} error(s), {n_img} image(s) screened: {'; '.join(result.errors)}"
            logger.error("series %s (study %s) failed: %s", series, study, result.reason)
        else:
            result.status = "screened"
            result.reason = f"{n_img} image(s) of {n_inst} instance(s) screened"
            logger.info("series %s (study %s): %s", series, study, result.reason)
        return self._finish(result, selected)

    def _images(self, selected: list[Dataset], errors: list[str]) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """Decoded images ``(C, *spatial)`` with their reference records, one instance decoded at a time (a 3D
        bundle's stack of single-frame slices at once); failures are appended to ``errors``."""
        readable = []
        for ds in selected:
            problem = _image_problem(ds)
            if problem is None:
                readable.append(ds)
            else:
                errors.append(f"{_name(ds)}: {problem}")
        if int(self.predictor.spatial_dims) == 2:
            for ds in readable:
                try:
                    frames = _frames(ds, self.reader)
                except Exception as e:
                    errors.append(_decode_error(_name(ds), e))
                    continue
                multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
                for i, frame in enumerate(frames):
                    yield _channel_first(frame), _ref([ds], i + 1 if multi else None)
            return
        singles = [ds for ds in readable if int(ds.get("NumberOfFrames", 1) or 1) == 1]
        volumes = [[ds] for ds in readable if int(ds.get("NumberOfFrames", 1) or 1) > 1]
        if singles:
            volumes.append(_sort_slices(singles))
        for slices in volumes:
            try:
                data, _ = self.reader.get_data([slices])
            except Exception as e:
                what = _name(slices[0]) if len(slices) == 1 else f"{len(slices)} slices from {_name(slices[0])}"
                errors.append(_decode_error(what, e))
                continue
            yield (np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]), _ref(slices, None)

    def _predict(self, images: Iterable[tuple[np.ndarray, dict[str, Any]]], errors: list[str]) -> list[dict[str, Any]]:
        """Preprocess each image as it comes (only the small model inputs are kept), then predict and guard in
        batches; a failure is recorded per image."""
        p = self.predictor
        window = getattr(p.intensity_map, "physical_range", None)
        ready: list[tuple[torch.Tensor, dict[str, Any]]] = []
        for img, ref in images:
            where = (ref["source"] or f"SOP instance {ref['sop_instance_uid']}") + (
                f" frame {ref['frame']}" if ref["frame"] else ""
            )
            if not np.all(np.isfinite(img)):
                errors.append(f"{where}: pixel values are not all finite.")
                continue
            lo, hi = float(img.min()), float(img.max())
            outside = window is not None and (lo < window[0] or hi > window[1])
            ref.update(intensity_range=[lo, hi], outside_intensity_window=bool(outside))
            try:
                ready.append((p.preprocess(img), ref))
            except Exception as e:
                errors.append(f"{where}: cannot be preprocessed for the model ({type(e).__name__}: {e})")
        out: list[dict[str, Any]] = []
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            try:
                preds = p.predict(torch.stack([x for x, _ in chunk]))
            except Exception as e:
                errors.extend(
                    f"{ref['source'] or ref['sop_instance_uid']}: prediction failed ({type(e).__name__}: {e})"
                    for _, ref in chunk
                )
                continue
            out.extend(dict(pred, **ref) for pred, (_, ref) in zip(preds, chunk))
        return out

    def _finish(self, result: SeriesResult, selected: list[Dataset]) -> SeriesResult:
        """Fills ``result.summary``."""
        p = self.predictor
        preds = [x for x in result.predictions if not x.get("refused")]
        summary: dict[str, Any] = {
            "images_refused": len(result.predictions) - len(preds),
            "statements": list(getattr(p, "statements", [])),
            "instances": len(selected) + len(result.skipped_instances),
            "instances_selected": len(selected),
            "images_screened": len(preds),
            "errors": len(result.errors),
            "outside_intensity_window": any(x["outside_intensity_window"] for x in preds),
        }
        if preds:
            classes = list(p.class_names)
            mean = {c: float(np.mean([x["probabilities"][c] for x in preds])) for c in classes}
            summary["mean_probabilities"] = mean
            summary["predicted_class_counts"] = {c: sum(x["predicted_class"] == c for x in preds) for c in classes}
            summary["series_predicted_class"] = max(classes, key=lambda c: mean[c])
            guarded = [x["guard"] for x in preds if x.get("guard") is not None]
            summary["guard"] = (
                {
                    "images_checked": len(guarded),
                    "adversarial_suspected": sum(bool(g["adversarial_suspected"]) for g in guarded),
                }
                if guarded
                else None
            )
        result.summary = summary
        return result


def _ref(slices: list[Dataset], frame: int | None) -> dict[str, Any]:
    """The reference record of one image: its instance (or the instances of a volume), frame and file."""
    ref = {
        "sop_instance_uid": str(slices[0].SOPInstanceUID),
        "frame": frame,
        "sop_class_uid": str(slices[0].SOPClassUID),
        "source": _src(slices[0]),
    }
    if len(slices) > 1:
        ref["sop_instance_uids"] = [str(ds.SOPInstanceUID) for ds in slices]
    return ref


def _decode_error(what: str, e: Exception) -> str:
    """A decoding failure naming the file once (DicomReader's messages already start with it)."""
    return f"{e}" if str(e).startswith(what) else f"{what}: cannot decode pixel data ({type(e).__name__}: {e})"


def _src(ds: Dataset) -> str | None:
    filename = getattr(ds, "filename", None)
    return str(filename) if isinstance(filename, (str, os.PathLike)) and str(filename) else None


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
            "study_instance_uid": result.study_uid,
            "series_instance_uid": result.series_uid,
            "status": result.status,
            "reason": result.reason,
            "model": result.model,
            "outside_intensity_window": any(p["outside_intensity_window"] for p in result.predictions),
            "images": result.predictions,
            "summary": result.summary,
            "errors": result.errors,
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
    """Writes a result: ``<series_uid>.SR.dcm`` (when there is an SR) and the ``<series_uid>.json`` sidecar.

    A result without a series (an unreadable file) is written as ``unreadable-<hash of the path>.json``.

    Args:
        result: a screening result.
        output_dir: the folder (created if needed).

    Returns:
        ``{"sr": path, "json": path}`` (``"sr"`` only when the result has an SR).

    Raises:
        ValueError: When ``output_dir`` exists and is not a folder.

    Example::

        >>> write_result(result, "out/")
        {'sr': PosixPath('out/1.2.3.SR.dcm'), 'json': PosixPath('out/1.2.3.json')}
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir={str(out)!r} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    stem = (
        result.series_uid
        or "unreadable-" + hashlib.sha1("|".join(result.sources or result.errors).encode()).hexdigest()[:12]
    )
    paths: dict[str, Path] = {}
    if result.sr is not None:
        paths["sr"] = out / f"{stem}.SR.dcm"
        result.sr.save_as(paths["sr"], enforce_file_format=True)
    record = result_to_json(result)
    if "sr" in paths:
        record["sr"]["path"] = str(paths["sr"])
    paths["json"] = out / f"{stem}.json"
    paths["json"].write_text(json.dumps(record, indent=2) + "\n")
    return paths
