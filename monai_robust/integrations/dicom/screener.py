# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Screening DICOM series with a trained bundle: selection, decoding, prediction with the adversarial-input guard,
and one :class:`~monai_robust.integrations.dicom.results.SeriesResult` (with its DICOM SR) per series.

The flow for a folder (or for datasets received over the network, see :meth:`DicomScreener.screen_datasets`):

1. every file is read with pydicom (large elements deferred, so a big folder is not held in memory); a file that is
   not DICOM or is unreadable for any reason becomes a ``"failed"`` result naming its path, and the run goes on;
2. instances are grouped by ``(StudyInstanceUID, SeriesInstanceUID)``; non-image objects (SR, SEG, KOS, PR, RT, no
   Pixel Data) are ``"skipped"`` with the reason, and :class:`~monai_robust.integrations.dicom.series.SeriesRules`
   pick the instances to screen; a series with none is ``"skipped"`` with the rule that excluded it;
3. pixel data are decoded by :class:`~monai_robust.data.image_reader.DicomReader` (modality rescale, MONOCHROME1
   inverted, JPEG 2000 through pylibjpeg): for a 2D bundle each frame of each instance is one image
   (:meth:`DicomReader.frames`), for a 3D bundle each multi-frame instance, or the stack of single-frame instances
   ordered by :func:`~monai_robust.data.image_reader.order_slices`, is one volume;
4. an image that is not for this model (colour into a grey model) is left out as ``"skipped: not for this
   model"``; an image that fails a sanity gate (:mod:`~monai_robust.integrations.dicom.gates`: non-finite,
   constant, off-window) gets no class, only ``"not screened: <reason>"``;
5. the bundle's input contract is checked on the decoded stored values with the instance's ``Modality`` and
   ``BodyPartExamined``: each violation is listed in the image's ``contract`` (JSON) and as a TEXT item of the SR.
   A modality outside the contract is a flag here, not a refusal, since the series rules decide which modalities
   are screened (the default rules skip the others with the reason); a body part that differs, values outside the
   stored range and 8-bit values in a 12-bit model are flags as everywhere;
6. the predictor preprocesses (the bundle's intensity window, as in training; an image with some values outside it
   is flagged ``outside_intensity_window``), predicts and runs the guard; an image that cannot be decoded or
   preprocessed is reported with its path and reason and the series is ``"failed"``, the images that worked still
   count;
7. :func:`~monai_robust.integrations.dicom.sr.build_sr` writes one Comprehensive SR per series.

Inputs are only read.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import MetaKeys
from pydicom.dataset import Dataset

from monai_robust.bundle.contract import FLAG
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.data.image_reader import DicomReader, order_slices
from monai_robust.integrations.dicom.gates import channel_mismatch, sanity_problem
from monai_robust.integrations.dicom.results import SeriesResult
from monai_robust.integrations.dicom.series import (
    SeriesRules,
    image_problem,
    non_image_reason,
    read_header,
    scan_inputs,
    source_name,
    source_path,
)
from monai_robust.integrations.dicom.sr import build_sr

__all__ = ["DicomScreener"]

logger = logging.getLogger(__name__)


def _frame_count(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames", 1)
    return int(value) if value not in (None, "") else 1


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
        contract = getattr(predictor, "contract", None)
        if contract is not None:
            self.model_info["input_contract"] = contract.to_json()

    # -- entry points -------------------------------------------------------------------------------------------

    def _unreadable(self, path: str, message: str, status: str = "failed") -> SeriesResult:
        logger.error("%s", message) if status == "failed" else logger.info("%s", message)
        return SeriesResult("", "", status, message, errors=[message], sources=[path], model=self.model_info)

    def screen_files(self, paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[SeriesResult]:
        """Screens the DICOM files in ``paths`` (files and folders, recursive).

        Args:
            paths: files and folders.

        Returns:
            One :class:`SeriesResult` per series found, then one ``"failed"`` result per unreadable file or odd
            entry (dangling link, FIFO; an empty folder named ``x.dcm`` is ``"skipped"``), each naming the path.

        Raises:
            ValueError: When a path does not exist.
        """
        files, problems = scan_inputs(paths)
        datasets, unreadable = [], []
        for f in files:
            try:
                datasets.append(read_header(f))
            except Exception as e:  # read_header names the file; anything else is named here
                unreadable.append(self._unreadable(str(f), str(e) if str(f) in str(e) else f"{f}: {e}"))
        for p, why in problems:
            unreadable.append(self._unreadable(str(p), f"{p}: {why}", "skipped" if "folder" in why else "failed"))
        return self.screen_datasets(datasets) + unreadable

    def screen_datasets(
        self, datasets: Sequence[Dataset], partial: Iterable[tuple[str, str]] = ()
    ) -> list[SeriesResult]:
        """Screens datasets of any mix of studies and series (e.g. received by a storage SCP).

        Args:
            datasets: pydicom datasets with pixel data (or deferred pixel data).
            partial: ``(StudyInstanceUID, SeriesInstanceUID)`` of series known to be cut off (e.g. by an aborted
                association): their results and SRs are marked partial.

        Returns:
            One :class:`SeriesResult` per ``(StudyInstanceUID, SeriesInstanceUID)``, in order of first appearance;
            a dataset without these UIDs gives a ``"failed"`` result of its own. No exception from one series
            stops the others: it becomes that series' ``"failed"`` result naming its files.
        """
        partial = set(partial)
        series: dict[tuple[str, str], list[Dataset]] = {}
        bad: list[SeriesResult] = []
        for ds in datasets:
            study, ser = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
            if not study or not ser:
                msg = f"{source_name(ds)}: no StudyInstanceUID/SeriesInstanceUID, cannot be grouped into a series."
                logger.error("%s", msg)
                src = source_path(ds)
                bad.append(
                    SeriesResult(
                        study, ser, "failed", msg, errors=[msg], sources=[src] if src else [], model=self.model_info
                    )
                )
                continue
            series.setdefault((study, ser), []).append(ds)
        results = []
        for (study, ser), members in series.items():
            try:
                result = self._screen_series(study, ser, members, (study, ser) in partial)
            except Exception as e:  # never let one series stop the run
                msg = f"series {ser} ({_names(members)}): screening failed ({type(e).__name__}: {e})"
                logger.exception("%s", msg)
                result = SeriesResult(
                    study, ser, "failed", msg, errors=[msg], sources=[s for s in map(source_path, members) if s],
                    model=self.model_info, partial=(study, ser) in partial,
                )  # fmt: skip
            results.append(result)
        for study in dict.fromkeys(s for s, _ in series):
            if all(r.status == "skipped" for r in results if r.study_uid == study):
                logger.info("study %s: no series matches the rules %s; nothing screened.", study, self.rules.to_dict())
        return results + bad

    # -- one series ---------------------------------------------------------------------------------------------

    def _screen_series(self, study: str, series: str, members: list[Dataset], partial: bool) -> SeriesResult:
        """Selection, prediction and SR of one series."""
        result = SeriesResult(
            study,
            series,
            "skipped",
            "",
            sources=[s for s in map(source_path, members) if s],
            model=self.model_info,
            patient_id=str(members[0].get("PatientID", "") or ""),
            partial=partial,
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
                result.skipped_instances.append(f"{source_name(ds)}: {why}")
        if not selected:
            reasons = sorted({m.split(": ", 1)[1] for m in result.skipped_instances})
            result.reason = f"no instance to screen: {'; '.join(reasons)}"
            logger.info("series %s (study %s) skipped: %s", series, study, result.reason)
            return self._finish(result, [])
        images = self._images(selected, result.errors)
        result.predictions = self._predict(images, result)
        screened = {u for p in result.predictions for u in (p.get("sop_instance_uids") or [p["sop_instance_uid"]])}
        if result.predictions:
            try:
                p = self.predictor
                evidence = [ds for ds in selected if str(ds.SOPInstanceUID) in screened]
                result.sr = build_sr(
                    evidence, result.predictions, p.name, p.version, p.class_names, partial=partial,
                    statements=getattr(p, "statements", ()),
                )
            except Exception as e:  # never let one series stop the run
                result.errors.append(
                    f"series {series} ({_names(selected)}): building the SR failed ({type(e).__name__}: {e})"
                )
        n_img, n_inst = len(result.predictions), len(screened)
        cut = " (partial series: cut off before it was complete)" if partial else ""
        left_out = [
            f"{len(v)} image(s) {k}: {'; '.join(v)}"
            for k, v in (("not screened", result.not_screened), ("skipped", result.skipped_images))
            if v
        ]
        if result.errors:
            result.status = "failed"
            result.reason = f"{len(result.errors)} error(s), {n_img} image(s) screened{cut}: {'; '.join(result.errors)}"
            logger.error("series %s (study %s) failed: %s", series, study, result.reason)
        elif n_img:
            result.status = "screened"
            result.reason = "; ".join([f"{n_img} image(s) of {n_inst} instance(s) screened{cut}", *left_out])
            logger.info("series %s (study %s): %s", series, study, result.reason)
        elif result.not_screened:
            result.status = "not screened"
            result.reason = f"not screened{cut}: {'; '.join(result.not_screened)}"
            logger.warning("series %s (study %s) %s", series, study, result.reason)
        else:
            result.status = "skipped"
            result.reason = f"skipped{cut}: {'; '.join(result.skipped_images)}"
            logger.info("series %s (study %s) %s", series, study, result.reason)
        return self._finish(result, selected)

    def _images(self, selected: list[Dataset], errors: list[str]) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """Decoded images ``(C, *spatial)`` with their reference records, one instance decoded at a time (a 3D
        bundle's stack of single-frame slices at once); failures are appended to ``errors``."""
        readable = []
        for ds in selected:
            problem = image_problem(ds)
            if problem is None:
                readable.append(ds)
            else:
                errors.append(f"{source_name(ds)}: {problem}")
        if int(self.predictor.spatial_dims) == 2:
            for ds in readable:
                try:
                    frames = self.reader.frames(ds)
                except Exception as e:
                    errors.append(_decode_error(source_name(ds), e))
                    continue
                multi = _frame_count(ds) > 1
                for i, frame in enumerate(frames):
                    yield frame, _ref([ds], i + 1 if multi else None)
            return
        singles = [ds for ds in readable if _frame_count(ds) == 1]
        volumes = [[ds] for ds in readable if _frame_count(ds) > 1]
        if singles:
            try:
                volumes.append(
                    order_slices(singles, what=f"series of {len(singles)} slices from {source_name(singles[0])}")
                )
            except ValueError as e:
                errors.append(str(e))
        for slices in volumes:
            try:
                data, meta = self.reader.get_data([slices])
            except Exception as e:
                what = (
                    source_name(slices[0])
                    if len(slices) == 1
                    else f"{len(slices)} slices from {source_name(slices[0])}"
                )
                errors.append(_decode_error(what, e))
                continue
            colour = meta[MetaKeys.ORIGINAL_CHANNEL_DIM] == -1
            yield (np.moveaxis(data, -1, 0) if colour else data[None]), _ref(slices, None)

    def _predict(
        self, images: Iterable[tuple[np.ndarray, dict[str, Any]]], result: SeriesResult
    ) -> list[dict[str, Any]]:
        """Gate, then preprocess each image as it comes (only the small model inputs are kept), then predict and
        guard in batches; a failure is recorded per image in ``result.errors``, a gate in ``result.not_screened``
        or ``result.skipped_images``."""
        p = self.predictor
        errors = result.errors
        window = getattr(p.intensity_map, "physical_range", None)
        units = getattr(p.intensity_map, "units", None)
        ready: list[tuple[torch.Tensor, dict[str, Any], list[dict[str, str]]]] = []
        for img, ref in images:
            where = _where(ref)
            mismatch = channel_mismatch(img, getattr(p, "in_channels", None))
            if mismatch is not None:
                result.skipped_images.append(f"{where}: {mismatch}")
                continue
            problem = sanity_problem(img, window, units)
            if problem is not None:
                result.not_screened.append(f"{where}: {problem}")
                continue
            lo, hi = float(img.min()), float(img.max())
            outside = window is not None and (lo < window[0] or hi > window[1])
            ref.update(intensity_range=[lo, hi], outside_intensity_window=bool(outside))
            try:
                flags = [_as_flag(f) for f in p.check(img, ref["modality"], ref["body_part"])]
                ready.append((p.preprocess(img), ref, flags))
            except Exception as e:
                errors.append(f"{where}: cannot be preprocessed for the model ({type(e).__name__}: {e})")
        out: list[dict[str, Any]] = []
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            try:
                preds = p.predict(torch.stack([x for x, _, _ in chunk]), flags=[f for _, _, f in chunk])
            except Exception as e:
                errors.extend(f"{_where(ref)}: prediction failed ({type(e).__name__}: {e})" for _, ref, _ in chunk)
                continue
            out.extend(dict(pred, **ref) for pred, (_, ref, _) in zip(preds, chunk))
        return out

    def _finish(self, result: SeriesResult, selected: list[Dataset]) -> SeriesResult:
        """Fills ``result.summary``."""
        p = self.predictor
        preds = [x for x in result.predictions if not x.get("refused")]  # refused by the bundle's input contract
        summary: dict[str, Any] = {
            "images_refused": len(result.predictions) - len(preds),
            "statements": list(getattr(p, "statements", [])),
            "instances": len(selected) + len(result.skipped_instances),
            "instances_selected": len(selected),
            "images_screened": len(preds),
            "errors": len(result.errors),
            "images_not_screened": len(result.not_screened),
            "images_skipped": len(result.skipped_images),
            "outside_intensity_window": any(x["outside_intensity_window"] for x in preds),
            "contract_flags": dict(Counter(f["code"] for x in result.predictions for f in x.get("contract") or [])),
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


def _names(members: Sequence[Dataset]) -> str:
    """The files (or SOP instances) of a series for messages, at most three named."""
    more = f", ... ({len(members)} instances)" if len(members) > 3 else ""
    return ", ".join(map(source_name, members[:3])) + more


def _where(ref: dict[str, Any]) -> str:
    """An image for messages: its file (or SOP instance) and frame."""
    return (ref["source"] or f"SOP instance {ref['sop_instance_uid']}") + (
        f" frame {ref['frame']}" if ref["frame"] else ""
    )


def _ref(slices: list[Dataset], frame: int | None) -> dict[str, Any]:
    """The reference record of one image: its instance (or the instances of a volume), frame, file, and the header
    values the input contract is checked against (``Modality``, ``BodyPartExamined``; ``None`` when absent)."""
    ref = {
        "sop_instance_uid": str(slices[0].SOPInstanceUID),
        "frame": frame,
        "sop_class_uid": str(slices[0].SOPClassUID),
        "source": source_path(slices[0]),
        "modality": str(slices[0].get("Modality", "") or "") or None,
        "body_part": str(slices[0].get("BodyPartExamined", "") or "") or None,
    }
    if len(slices) > 1:
        ref["sop_instance_uids"] = [str(ds.SOPInstanceUID) for ds in slices]
    return ref


def _as_flag(violation: dict[str, str]) -> dict[str, str]:
    """A contract violation as screening reports it: a modality outside the contract is a flag, since the series rules
    (not the contract) select which modalities are screened; any other violation unchanged."""
    if violation["code"] != "modality" or violation["severity"] == FLAG:
        return violation
    note = " Screened because the series rules select this modality; the model was not trained on it."
    return {**violation, "severity": FLAG, "message": violation["message"] + note}


def _decode_error(what: str, e: Exception) -> str:
    """A decoding failure naming the file once (DicomReader's messages already start with it)."""
    return f"{e}" if str(e).startswith(what) else f"{what}: cannot decode pixel data ({type(e).__name__}: {e})"
