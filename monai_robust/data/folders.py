# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Classification datalists from a tree of class sub-folders or a CSV manifest of DICOM / NIfTI / PNG images.

An image is a DICOM file, a folder holding one DICOM series (read as one volume, see
:func:`~monai_robust.data.image_reader.read_dicom_series`), a NIfTI file (``.nii``, ``.nii.gz``) or a PNG.
Every image is checked when the datalist is built (``validate=True``), so a bad file is reported here, by name,
and not deep inside a DataLoader worker. With ``on_error="skip"`` bad images are left out and reported in
:attr:`ImageDatalist.skipped` and by a warning, never dropped silently.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import
from monai.utils.enums import StrEnum

from monai_robust.data.datalist import write_datalist
from monai_robust.data.image_reader import is_dicom_input, read_dicom, read_dicom_series
from monai_robust.utils.intensity import LinearIntensityMap

__all__ = ["ImageDatalist", "OnError", "check_image", "datalist_from_csv", "datalist_from_folders"]

logger = logging.getLogger(__name__)
_NIFTI = (".nii", ".nii.gz")
_PIL = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


class OnError(StrEnum):
    """What a loader over many files does with a bad one: ``"raise"`` a ``ValueError`` or ``"skip"`` and report it."""

    RAISE = "raise"
    SKIP = "skip"


@dataclass
class ImageDatalist:
    """MONAI data dicts ``{"image": path, "label": class index}`` with the class names and the skipped inputs.

    Args:
        items: the data dicts (absolute paths as strings, symbolic links kept).
        classes: class names; ``label`` indexes this list.
        skipped: ``(path, reason)`` of every input left out with ``on_error="skip"``.
    """

    items: list[dict[str, Any]]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def class_counts(self) -> dict[str, int]:
        """Number of items of each class, in class order."""
        counts = np.bincount([int(it["label"]) for it in self.items], minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist()))

    def split(self, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[dict[str, Any]]]:
        """A stratified random split into ``training``, ``validation`` and ``test`` (each class split alike).

        Args:
            fractions: the three fractions, summing to 1.
            seed: seed of the shuffle.

        Returns:
            ``{"training": [...], "validation": [...], "test": [...]}``.

        Raises:
            ValueError: When ``fractions`` are not three non-negative numbers summing to 1.
        """
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got fractions={list(fractions)!r}.")
        rng = np.random.default_rng(seed)
        out: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
        labels = np.asarray([int(it["label"]) for it in self.items])
        for c in range(len(self.classes)):
            idx = rng.permutation(np.flatnonzero(labels == c))
            n_train, n_val = int(round(fractions[0] * len(idx))), int(round(fractions[1] * len(idx)))
            n_val = min(n_val, len(idx) - n_train)
            for name, part in zip(out, (idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])):
                out[name].extend(self.items[i] for i in part)
        for name in out:
            out[name].sort(key=lambda it: it["image"])
        return out

    def to_json(
        self,
        path: str | Path,
        intensity_map: LinearIntensityMap | None = None,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        overwrite: bool = False,
    ) -> Path:
        """Writes the stratified :meth:`split` as a datalist (see :func:`~monai_robust.data.datalist.write_datalist`).

        Args:
            path: the JSON file.
            intensity_map: the raw -> model map for these images (``None``: unknown, not recorded).
            fractions: training, validation, test fractions.
            seed: seed of the split.
            overwrite: replace an existing file.

        Returns:
            ``path``.

        Raises:
            ValueError: As :meth:`split` and ``write_datalist``.

        Example::

            >>> datalist_from_folders("xrays").to_json("xrays/dataset.json", LinearIntensityMap.from_window(0, 4095))
        """
        return write_datalist(path, self.split(fractions, seed), self.classes, intensity_map, overwrite=overwrite)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def check_image(path: str | Path, validate: bool = True) -> str:
    """Checks that ``path`` is an image the data layer reads, and returns its kind.

    Args:
        path: a DICOM file, a DICOM series folder, a NIfTI file, a PNG or a JPEG (8-bit RGB, e.g. endoscopy).
        validate: read the content (DICOM pixel-data length, series consistency, NIfTI data, PNG checksum);
            ``False`` checks only existence and type.

    Returns:
        ``"dicom"``, ``"dicom_series"``, ``"nifti"``, ``"png"`` or ``"jpeg"``.

    Raises:
        ValueError: When ``path`` does not exist, is an empty folder, is not a supported image, or fails the
            content checks (truncated or non-DICOM file, mixed series, unreadable NIfTI/PNG). The message names
            the file.

    Example::

        >>> check_image("../shared/data/dicom/ct_series")
        'dicom_series'
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: does not exist.")
    if path.is_dir():
        if validate:
            read_dicom_series(path)
        elif not any(p.is_file() and not p.name.startswith(".") for p in path.iterdir()):
            raise ValueError(f"{path}: empty folder, no DICOM file in it.")
        return "dicom_series"
    suffix = _suffix(path)
    if suffix in _NIFTI:
        if validate:
            _check_nifti(path)
        return "nifti"
    if suffix in _PIL:
        if validate:
            _check_png(path)
        return _PIL[suffix]
    if suffix in (".dcm", ".dicom") or is_dicom_input(path):
        read_dicom(path, stop_before_pixels=not validate)
        return "dicom"
    raise ValueError(f"{path}: not a supported image (DICOM, DICOM series folder, .nii, .nii.gz, .png, .jpg).")


def _check_nifti(path: Path) -> None:
    import nibabel as nib

    try:
        img = nib.load(path)
        np.asanyarray(img.dataobj)  # reads (and decompresses) the data: catches truncated files
    except Exception as e:
        raise ValueError(f"{path}: unreadable NIfTI file ({type(e).__name__}: {e}).") from e


def _check_png(path: Path) -> None:
    pil_image, has_pil = optional_import("PIL.Image")
    if not has_pil:
        raise ValueError(f"{path}: reading PNG/JPEG needs Pillow (pip install pillow).")
    try:
        with pil_image.open(path) as img:
            img.verify()
    except Exception as e:
        raise ValueError(f"{path}: unreadable {_PIL[_suffix(path)].upper()} file ({type(e).__name__}: {e}).") from e


class _Reporter:
    """Raises, or records and logs, a bad input according to ``on_error``."""

    def __init__(self, on_error: str | OnError, source: Path) -> None:
        if on_error not in [e.value for e in OnError]:
            raise ValueError(f"on_error must be 'raise' or 'skip', got on_error={on_error!r}.")
        self.on_error = OnError(on_error)
        self.source = source
        self.skipped: list[tuple[str, str]] = []

    def bad(self, path: Path | str, message: str) -> None:
        if self.on_error == OnError.RAISE:
            raise ValueError(message)
        self.skipped.append((str(path), message))
        logger.warning("skipped %s", message)

    def finish(self, items: list[dict[str, Any]], classes: list[str]) -> ImageDatalist:
        if self.skipped:
            warnings.warn(
                f"{self.source}: skipped {len(self.skipped)} bad input(s), e.g. {self.skipped[0][1]} "
                "(all listed in ImageDatalist.skipped).",
                stacklevel=3,
            )
        if not items:
            raise ValueError(f"{self.source}: no valid image found ({len(self.skipped)} skipped).")
        return ImageDatalist(items, classes, self.skipped)


def datalist_from_folders(
    root: str | Path,
    classes: Sequence[str] | None = None,
    on_error: str | OnError = "raise",
    validate: bool = True,
) -> ImageDatalist:
    """Data dicts from ``root/<class name>/<image>``; an image is a file or a DICOM series sub-folder.

    Hidden entries (names starting with ``.``) are ignored, and so are files directly in ``root``.

    Args:
        root: the folder of class sub-folders.
        classes: the class names in label order; default: the sub-folder names, sorted.
        on_error: ``"raise"`` (default) or ``"skip"`` bad images, unknown class folders and empty class folders
            (reported in ``skipped`` and by a warning).
        validate: check each image's content (see :func:`check_image`).

    Returns:
        An :class:`ImageDatalist`, items sorted by class then path.

    Raises:
        ValueError: When ``root`` is not a folder or has no class sub-folder, or no valid image is left; and with
            ``on_error="raise"``, for a sub-folder not in ``classes``, an empty class folder, or a bad image.

    Example::

        >>> dl = datalist_from_folders("chest_xrays", classes=["normal", "pneumonia"])
        >>> dl.items[0]
        {'image': '/data/chest_xrays/normal/0001.dcm', 'label': 0}
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder.")
    report = _Reporter(on_error, root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: empty, no class sub-folder in it.")
    class_list = [str(c) for c in classes] if classes is not None else [p.name for p in folders]
    if len(set(class_list)) != len(class_list):
        raise ValueError(f"classes must be unique, got classes={class_list!r}.")
    items = []
    for folder in folders:
        if folder.name not in class_list:
            report.bad(folder, f"{folder}: class folder {folder.name!r} is not in classes {class_list}.")
            continue
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not entries:
            report.bad(folder, f"{folder}: empty class folder.")
            continue
        for entry in entries:
            try:
                check_image(entry, validate)
            except ValueError as e:
                report.bad(entry, str(e))
                continue
            items.append({"image": os.path.abspath(entry), "label": class_list.index(folder.name)})
    return report.finish(items, class_list)


def _label_index(value: str, classes: list[str]) -> int | None:
    """A CSV label: a class name, else an integer index into ``classes``; ``None`` when neither."""
    if value in classes:
        return classes.index(value)
    try:
        idx = int(value)
    except ValueError:
        return None
    return idx if 0 <= idx < len(classes) and str(idx) == value else None


def datalist_from_csv(
    csv_path: str | Path,
    classes: Sequence[str] | None = None,
    base_dir: str | Path | None = None,
    on_error: str | OnError = "raise",
    validate: bool = True,
) -> ImageDatalist:
    """Data dicts from a CSV manifest with a header and the columns ``image,label`` (others are ignored).

    ``image`` is a path relative to ``base_dir`` (default: the CSV's folder) or absolute; ``label`` is a class
    name, or an integer index into ``classes``.

    Args:
        csv_path: the manifest.
        classes: the class names in label order; default: the distinct labels, sorted (numerically when they
            are all integers).
        base_dir: folder that relative image paths start from.
        on_error: ``"raise"`` (default) or ``"skip"`` rows with a missing or bad image or an unknown label.
        validate: check each image's content (see :func:`check_image`).

    Returns:
        An :class:`ImageDatalist`, items in row order.

    Raises:
        ValueError: When the CSV is missing, lacks the ``image``/``label`` columns or has no row, or no valid row
            is left; and with ``on_error="raise"``, for a row (named by its line number) whose image is missing
            or bad, or whose label is empty or not in ``classes``.

    Example::

        >>> dl = datalist_from_csv("manifest.csv", classes=["normal", "lesion"])
        >>> dl.classes, len(dl)
        (['normal', 'lesion'], 120)
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: manifest not found.")
    base = Path(base_dir) if base_dir is not None else csv_path.parent
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; the header must name 'image' and 'label'.")
        rows = [(i + 2, (r["image"] or "").strip(), (r["label"] or "").strip()) for i, r in enumerate(reader)]
    if not rows:
        raise ValueError(f"{csv_path}: no rows.")
    if classes is not None:
        class_list = [str(c) for c in classes]
    else:
        names = sorted({lab for _, _, lab in rows if lab})
        numeric = all(n.lstrip("-").isdigit() for n in names)
        class_list = sorted(names, key=int) if numeric else names
    if len(set(class_list)) != len(class_list):
        raise ValueError(f"classes must be unique, got classes={class_list!r}.")
    report = _Reporter(on_error, csv_path)
    items = []
    for line, image, label in rows:
        where = f"{csv_path}, line {line}"
        idx = _label_index(label, class_list) if label else None
        if idx is None:
            report.bad(image, f"{where}: label {label!r} is not in classes {class_list}.")
            continue
        path = Path(image) if Path(image).is_absolute() else base / image
        if not image or not path.exists():
            report.bad(path, f"{where}: image {str(path)!r} does not exist.")
            continue
        try:
            check_image(path, validate)
        except ValueError as e:
            report.bad(path, f"{where}: {e}")
            continue
        items.append({"image": os.path.abspath(path), "label": idx})
    return report.finish(items, class_list)
