# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The DICOM Structured Report of one screened series (highdicom, TID 1500 Measurement Report).

Codes that DICOM does not define use the private coding scheme ``99MONAIROBUST``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import pydicom
from monai.utils import optional_import
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

hd, _HAS_HIGHDICOM = optional_import("highdicom")

__all__ = ["CODING_SCHEME", "SR_SERIES_NUMBER", "build_sr"]

logger = logging.getLogger(__name__)

CODING_SCHEME = "99MONAIROBUST"  # private coding scheme for the concepts DICOM does not define
SR_SERIES_NUMBER = 990
_PIXEL_TAGS = frozenset(
    pydicom.datadict.tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)
_TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


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
    partial: bool = False,
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
        partial: the series was cut off (e.g. its association aborted): the report's CompletionFlag is
            ``PARTIAL`` instead of ``COMPLETE``.
        series_instance_uid, sop_instance_uid: UIDs of the report (new ones by default).
        statements: what the bundle's metadata says every result must carry ("not for clinical use", "trained on
            synthetic data"); one TEXT item "Statement" each in the report's root container. Predictions refused by
            the bundle's input contract (``refused``) get no measurement group but one TEXT item
            "Input outside the model's contract" with the reasons; predictions with contract flags (``contract``:
            body part, stored range, bit depth, ...) keep their group and get one TEXT item "Input contract flag".

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
        reasons = "; ".join(f["message"] for f in pred.get("contract") or [])
        if pred.get("refused"):
            texts.append((_code("OFFCONTRACT", "Input outside the model's contract"), f"image {i + 1}: {reasons}"))
            continue
        if reasons:
            texts.append((_code("CONTRACTFLAG", "Input contract flag"), f"image {i + 1}: {reasons}"))
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
        is_complete=not partial,
        series_description=f"AI screening: {model_name}"[:64],
    )
    for name, text in texts:
        sr.ContentSequence.append(
            hd.sr.TextContentItem(name=name, value=text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    return sr
