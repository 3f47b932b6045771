# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A MONAI Deploy application for the screening chain: Deploy's ``DICOMDataLoaderOperator`` ->
``DICOMSeriesSelectorOperator`` -> ``DICOMSeriesToVolumeOperator`` -> :class:`RobustClassifierOperator` (the bundle's
network and detector guard) -> :class:`RobustSRWriterOperator` (the TID 1500 Structured Report of
:func:`~monai_robust.integrations.dicom.build_sr` and the JSON of
:func:`~monai_robust.integrations.dicom.result_to_json`, as ``screen`` writes them).

Axis order: Deploy's volume is ``(slices, rows, columns)`` (NumPy ``DHW``); this project's reader, like ITK and
MONAI's readers, gives channel-first ``(C, columns, rows[, slices])``. :func:`deploy_to_reader_layout` converts;
passing Deploy's array straight to the bundle would silently transpose every image. Values: Deploy leaves MONOCHROME1
stored values as they are (higher = darker), the reader inverts them over the BitsStored range before the modality
rescale (higher = brighter, as in training); :func:`deploy_to_reader_values` maps Deploy's values to the reader's.

Run (``monai-deploy-app-sdk`` 4.0.0, the ``deploy`` extra; Holoscan runs on CPU and logs that no CUDA driver exists)::

    python -m monai_robust.integrations.deploy_app --bundle bundles/robust_xray_classification \\
        -i incoming/ -o results/ --modality CR DX

Deploy's ``DICOMSeriesToVolumeOperator`` converts the first selected series only, so one run writes one SR (the JSON's
``summary`` is left empty; ``screen`` fills it). ``monai-deploy-app-sdk`` is optional: this module imports without it;
building the app or an operator raises a clear error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from monai_robust.integrations.dicom import SeriesResult, build_sr, write_result

Application, has_deploy = optional_import("monai.deploy.core", name="Application", as_type="base")
Operator, _ = optional_import("monai.deploy.core", name="Operator", as_type="base")
CountCondition, _ = optional_import("holoscan.conditions", name="CountCondition")

__all__ = [
    "RobustClassifierOperator",
    "RobustSRWriterOperator",
    "RobustScreeningDeployApp",
    "deploy_to_reader_layout",
    "deploy_to_reader_values",
    "main",
    "selection_rules",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "MONAI Deploy is not importable: `pip install torch==2.13.0 monai-deploy-app-sdk==4.0.0` (the project's `deploy` "
    "extra; it brings Holoscan, which runs on CPU)."
)


def _require_deploy() -> None:
    if not has_deploy:
        raise RuntimeError(INSTALL_HINT)


def deploy_to_reader_layout(voxels: np.ndarray, spatial_dims: int) -> list[np.ndarray]:
    """Deploy's volume ``(slices, rows, columns)`` as this project's reader gives images: channel first, columns
    before rows.

    Args:
        voxels: ``Image.asnumpy()`` of ``DICOMSeriesToVolumeOperator``, 3 dimensions ``(slices, rows, columns)``.
        spatial_dims: 2: one image ``(1, columns, rows)`` per slice; 3: one volume ``(1, columns, rows, slices)``.

    Returns:
        The images, in slice order.

    Raises:
        ValueError: When ``voxels`` is not 3-dimensional or ``spatial_dims`` is not 2 or 3.

    Example::

        >>> deploy_to_reader_layout(np.zeros((1, 40, 56)), 2)[0].shape  # 40 rows, 56 columns
        (1, 56, 40)
    """
    voxels = np.asarray(voxels)
    if voxels.ndim != 3:
        raise ValueError(f"Deploy volume must be (slices, rows, columns), got shape {voxels.shape}.")
    if spatial_dims == 2:
        return [np.ascontiguousarray(s.T[None]) for s in voxels]
    if spatial_dims == 3:
        return [np.ascontiguousarray(voxels.transpose(2, 1, 0)[None])]
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")


def deploy_to_reader_values(voxels: np.ndarray, datasets: Sequence[Any]) -> np.ndarray:
    """Deploy's values (modality rescale ``s * v + b`` of the stored values ``v``) as this project's reader gives them:
    a MONOCHROME1 slice becomes ``s * (lo + hi - v) + b`` (the stored values inverted over the BitsStored range
    ``[lo, hi]``, then rescaled); other slices are unchanged.

    Args:
        voxels: ``(slices, rows, columns)`` from ``DICOMSeriesToVolumeOperator``.
        datasets: the slices' datasets in the volume's order (one per slice).

    Returns:
        A float32 copy of ``voxels`` in the reader's values.

    Raises:
        ValueError: When the counts differ, or a MONOCHROME1 slice has a Modality LUT Sequence (not a linear rescale:
            its inversion cannot be recovered from Deploy's values; screen such series with ``screen``).

    Example::

        >>> deploy_to_reader_values(np.full((1, 2, 2), 803), [monochrome1_15_bit])[0, 0, 0]
        31964.0
    """
    voxels = np.asarray(voxels, dtype=np.float32)
    if voxels.ndim != 3 or len(datasets) != voxels.shape[0]:
        raise ValueError(f"need one dataset per slice of a (slices, rows, columns) volume, got {len(datasets)} "
                         f"dataset(s) for shape {voxels.shape}.")
    out = voxels.copy()
    for i, ds in enumerate(datasets):
        if str(ds.get("PhotometricInterpretation", "")) != "MONOCHROME1":
            continue
        if "ModalityLUTSequence" in ds:
            raise ValueError(f"SOP instance {ds.get('SOPInstanceUID', '?')}: MONOCHROME1 with a Modality LUT Sequence: "
                             "Deploy's values cannot be mapped to the reader's; screen this series with `screen`.")
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        out[i] = slope * (lo + hi) + 2 * intercept - voxels[i]
    return out


def selection_rules(modalities: Sequence[str] | None) -> str:
    """``DICOMSeriesSelectorOperator`` rules (JSON) selecting the series of the given modalities (all: ``None``).

    Example::

        >>> json.loads(selection_rules(["CR", "DX"]))["selections"][0]["conditions"]
        {'Modality': '(?i)^(CR|DX)$'}
    """
    conditions = {} if not modalities else {"Modality": "(?i)^(" + "|".join(str(m) for m in modalities) + ")$"}
    return json.dumps({"selections": [{"name": "monai_robust screening", "conditions": conditions}]})


class RobustClassifierOperator(Operator):
    """Deploy operator: the selected series' volume -> the bundle's predictions with the guard's verdict.

    Inputs ``image`` (Deploy ``Image`` from ``DICOMSeriesToVolumeOperator``) and ``study_selected_series_list``;
    output ``result``: a :class:`~monai_robust.integrations.dicom.SeriesResult` (predictions as ``screen`` makes them,
    one per image, each naming its SOP instance(s); SR not yet built).

    Args:
        fragment: the Deploy application.
        predictor: a :class:`~monai_robust.bundle.predictor.BundlePredictor`.
    """

    def __init__(self, fragment: Any, *args: Any, predictor: Any, **kwargs: Any) -> None:
        _require_deploy()
        for attr in ("preprocess", "predict", "spatial_dims", "class_names"):
            if not hasattr(predictor, attr):
                raise ValueError(f"predictor must be a BundlePredictor, got {type(predictor).__name__}.")
        self.predictor = predictor
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        """Declares the ports."""
        spec.input("image")
        spec.input("study_selected_series_list")
        spec.output("result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Predicts every image of the selected series."""
        image = op_input.receive("image")
        selected = op_input.receive("study_selected_series_list")
        series = selected[0].selected_series[0].series
        datasets = [inst.get_native_sop_instance() for inst in series.get_sop_instances()]
        op_output.emit((self.classify(image.asnumpy(), datasets), datasets), "result")

    def classify(self, voxels: np.ndarray, datasets: Sequence[Any]) -> SeriesResult:
        """The predictions for a Deploy volume of ``datasets`` (one per slice, in the volume's order), each with the
        bundle's input-contract flags found on the image as read (modality and body part from the first header)."""
        p = self.predictor
        images = deploy_to_reader_layout(deploy_to_reader_values(voxels, datasets), int(p.spatial_dims))
        first = datasets[0]
        window = getattr(p.intensity_map, "physical_range", None)
        refs = []
        for i, img in enumerate(images):
            members = datasets if p.spatial_dims == 3 else [datasets[i]]
            lo, hi = float(img.min()), float(img.max())
            refs.append(
                {
                    "sop_instance_uid" if len(members) == 1 else "sop_instance_uids": (
                        str(members[0].SOPInstanceUID) if len(members) == 1 else [str(d.SOPInstanceUID) for d in members]
                    ),
                    "frame": None,
                    "sop_class_uid": str(members[0].SOPClassUID),
                    "source": None,
                    "intensity_range": [lo, hi],
                    "outside_intensity_window": bool(window is not None and (lo < window[0] or hi > window[1])),
                }
            )
        # the input contract on the stored values as read, before the bundle's resampling hides e.g. 8-bit data
        modality, body_part = (str(first.get(k, "") or "").strip() or None for k in ("Modality", "BodyPartExamined"))
        images = [img.astype(np.float32) for img in images]
        flags = [p.check(img, modality, body_part) for img in images]
        x = torch.stack([p.preprocess(img) for img in images])
        predictions = [dict(pred, **ref) for pred, ref in zip(p.predict(x, flags=flags), refs)]
        return SeriesResult(
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            "screened",
            f"{len(predictions)} image(s) of {len(datasets)} instance(s) screened (MONAI Deploy)",
            predictions=predictions,
            model={"name": p.name, "version": p.version, "class_names": list(p.class_names)},
            patient_id=str(first.get("PatientID", "") or ""),
        )


class RobustSRWriterOperator(Operator):
    """Deploy operator: the classifier's result -> ``<series uid>.SR.dcm`` (TID 1500, :func:`build_sr`) and
    ``<series uid>.json`` in ``output_folder`` (:func:`~monai_robust.integrations.dicom.write_result`).

    Args:
        fragment: the Deploy application.
        output_folder: where to write (created if needed).
    """

    def __init__(self, fragment: Any, *args: Any, output_folder: str | os.PathLike, **kwargs: Any) -> None:
        _require_deploy()
        self.output_folder = Path(output_folder)
        self.written: list[dict[str, Path]] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        """Declares the port."""
        spec.input("result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Builds and writes the SR."""
        result, datasets = op_input.receive("result")
        model = result.model
        result.sr = build_sr(datasets, result.predictions, model["name"], model["version"], model["class_names"])
        self.written.append(write_result(result, self.output_folder))
        logger.info("SR written: %s", self.written[-1])


class RobustScreeningDeployApp(Application):
    """The screening chain as a MONAI Deploy application (see the module docstring).

    Args:
        input_folder: the DICOM files to screen (Deploy's loader reads the folder recursively).
        output_folder: where the SR and JSON go.
        predictor: a :class:`~monai_robust.bundle.predictor.BundlePredictor`.
        modalities: the series to select (default CR and DX; ``None``: any).

    Raises:
        RuntimeError: When ``monai-deploy-app-sdk`` is not installed.
        ValueError: When ``input_folder`` is not a folder.

    Example::

        >>> app = RobustScreeningDeployApp("incoming/", "results/", BundlePredictor("bundles/robust_xray_classification"))
        >>> app.run()
    """

    def __init__(
        self,
        input_folder: str | os.PathLike,
        output_folder: str | os.PathLike,
        predictor: Any,
        modalities: Sequence[str] | None = ("CR", "DX"),
    ) -> None:
        _require_deploy()
        if not Path(input_folder).is_dir():
            raise ValueError(f"input_folder={str(input_folder)!r} is not a folder.")
        self.input_folder = Path(input_folder)
        self.output_folder = Path(output_folder)
        self.predictor = predictor
        self.modalities = modalities
        self.writer: RobustSRWriterOperator | None = None
        super().__init__([sys.argv[0]])

    def compose(self) -> None:
        """Builds the operator graph (Deploy calls it from ``run``)."""
        from monai.deploy.operators import (
            DICOMDataLoaderOperator,
            DICOMSeriesSelectorOperator,
            DICOMSeriesToVolumeOperator,
        )

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_folder, name="loader")
        selector = DICOMSeriesSelectorOperator(self, rules=selection_rules(self.modalities), name="selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="to_volume")
        classifier = RobustClassifierOperator(self, predictor=self.predictor, name="classifier")
        self.writer = RobustSRWriterOperator(self, output_folder=self.output_folder, name="sr_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, classifier, {("image", "image")})
        self.add_flow(selector, classifier, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(classifier, self.writer, {("result", "result")})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_robust.integrations.deploy_app --bundle B -i IN -o OUT [--modality CR DX]
    [--overrides JSON]``: runs the Deploy application once; returns 0 when an SR was written, 1 otherwise."""
    from monai_robust.bundle.predictor import BundlePredictor

    parser = argparse.ArgumentParser(prog="python -m monai_robust.integrations.deploy_app", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="the bundle folder")
    parser.add_argument("-i", "--input", required=True, help="folder of DICOM files")
    parser.add_argument("-o", "--output", required=True, help="folder for the SR and JSON")
    parser.add_argument("--modality", nargs="*", default=["CR", "DX"], help="series to select (none: any)")
    parser.add_argument("--overrides", default="{}", help='bundle config overrides as JSON, e.g. \'{"bundle_root": "runs/x"}\'')
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        overrides = json.loads(args.overrides)
    except json.JSONDecodeError as e:
        parser.error(f"--overrides is not valid JSON ({e}): {args.overrides!r}")
    if not isinstance(overrides, dict):
        parser.error(f"--overrides must be a JSON object, got {args.overrides!r}")
    predictor = BundlePredictor(args.bundle, device=args.device, **overrides)
    app = RobustScreeningDeployApp(args.input, args.output, predictor, modalities=args.modality or None)
    app.run()
    written = app.writer.written if app.writer is not None else []
    for paths in written:
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0 if any("sr" in p for p in written) else 1


if __name__ == "__main__":
    raise SystemExit(main())

