# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A MONAI ``ImageReader`` for the DICOM that MONAI's ``PydicomReader`` (1.6) reads wrongly, plus checked readers.

MONAI's ``PydicomReader`` reads single-frame grayscale files and classic series well, but (measured on MONAI
1.6.1 with the files in ``../shared/data/dicom``): a multi-frame file comes back as ``(rows, frames, cols)``
(frames in the middle axis), an enhanced multi-frame CT keeps raw stored values (its rescale sits in the
functional groups), an RGB ultrasound comes back as a 3D ``(cols, rows, 3)`` image that ``ensure_channel_first``
does not recognise as colour, MONOCHROME1 is not inverted, and a series is ordered by ``InstanceNumber`` with
no check that it holds one series. :class:`DicomReader` fixes these and is otherwise laid out like MONAI's
reader (``swap_ij``: array axes are ``(column, row[, slice])``, RAS affine), so both agree where MONAI is right.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = ["DicomReader", "is_dicom_input", "order_slices", "read_dicom", "read_dicom_series"]

_NOT_SLICES = {"DICOMDIR"}


def is_dicom_input(path: str | Path) -> bool:
    """``True`` for a folder (a DICOM series), a ``.dcm``/``.dicom`` file, or a file with the DICOM preamble.

    Args:
        path: file or folder.

    Returns:
        Whether :class:`DicomReader` should read ``path``.

    Example::

        >>> is_dicom_input("scan.nii.gz")
        False
    """
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in (".dcm", ".dicom"):
        return True
    if p.is_file():
        try:
            return bool(pydicom.misc.is_dicom(p))
        except OSError:
            return False
    return False


def read_dicom(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Reads one DICOM file and checks that it is a complete image.

    Args:
        path: the ``.dcm`` file.
        stop_before_pixels: read the header only (skips the pixel-data checks).

    Returns:
        The pydicom dataset (``ds.filename`` is ``path``).

    Raises:
        ValueError: When ``path`` is not a file, not DICOM (no preamble / ``DICM`` prefix), unreadable, has no
            Pixel Data or image-pixel attributes (a truncated header or a non-image object), or holds fewer
            pixel bytes than its header announces (a truncated file). The message names ``path``.

    Example::

        >>> ds = read_dicom("../shared/data/dicom/693_UNCR.dcm")
        >>> ds.Modality
        'CT'
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a file.")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as e:
        raise ValueError(f"{path}: not a DICOM file ({e}).") from e
    except Exception as e:  # truncated or corrupt header: pydicom raises EOFError, struct.error, ...
        raise ValueError(f"{path}: unreadable DICOM file ({type(e).__name__}: {e}).") from e
    if stop_before_pixels:
        return ds
    try:
        _check_image(ds, path)
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: unusable DICOM header ({e}).") from e
    except Exception as e:  # an element pydicom converts only now: unknown VR, bad transfer syntax, ...
        raise ValueError(f"{path}: unusable DICOM header ({type(e).__name__}: {e}).") from e
    return ds


def _check_image(ds: Dataset, path: Path) -> None:
    """The checks of :func:`read_dicom` on a read dataset (any exception is named by the caller)."""
    missing = [k for k in ("PixelData", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel") if k not in ds]
    if missing:
        raise ValueError(
            f"{path}: no image in this DICOM file (missing {', '.join(missing)}); the file is truncated or is not an "
            f"image object (SOP class {ds.get('SOPClassUID', 'unknown')!s})."
        )
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is not None and not tsyntax.is_encapsulated:
        expected = pydicom.pixels.utils.get_expected_length(ds, unit="bytes")
        if len(ds.PixelData) < expected:
            raise ValueError(f"{path}: truncated pixel data, {len(ds.PixelData)} of {expected} bytes.")


def _source_name(ds: Dataset) -> str:
    """The file a dataset was read from, or its SOPInstanceUID, for messages."""
    filename = getattr(ds, "filename", None)
    if isinstance(filename, (str, Path)) and str(filename):
        return str(filename)
    return f"SOP instance {ds.get('SOPInstanceUID', '<no SOPInstanceUID>')}"


def _orientation(ds: Dataset) -> np.ndarray | None:
    """``(row_dir, col_dir)`` from the classic or the shared functional-group tag, or ``None``."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        fg = _functional_group(ds, "PlaneOrientationSequence", 0)
        iop = fg.get("ImageOrientationPatient") if fg is not None else None
    return None if iop is None else np.asarray([float(v) for v in iop], dtype=np.float64).reshape(2, 3)


def _functional_group(ds: Dataset, name: str, frame: int) -> Dataset | None:
    """The item of functional-group macro ``name`` for ``frame`` (per-frame first, then shared), or ``None``."""
    for seq_name, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq and len(seq) > idx and name in seq[idx] and len(seq[idx][name].value):
            return seq[idx][name].value[0]
    return None


def _frame_positions(ds: Dataset, num_frames: int) -> np.ndarray | None:
    """``(frames, 3)`` ImagePositionPatient of each frame of a multi-frame file, or ``None`` when absent."""
    pos = []
    for i in range(num_frames):
        fg = _functional_group(ds, "PlanePositionSequence", i)
        if fg is None or "ImagePositionPatient" not in fg:
            return None
        pos.append([float(v) for v in fg.ImagePositionPatient])
    return np.asarray(pos, dtype=np.float64)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """``(row spacing, column spacing)`` in mm: PixelSpacing, the functional group, or ImagerPixelSpacing (X-ray);
    ``None`` (with a warning when a value was present but not positive) when there is no usable one."""
    sp = ds.get("PixelSpacing")
    if sp is None:
        fg = _functional_group(ds, "PixelMeasuresSequence", 0)
        sp = fg.get("PixelSpacing") if fg is not None else None
    if sp is None:
        sp = ds.get("ImagerPixelSpacing")
    if sp is None:
        return None
    spacing = (float(sp[0]), float(sp[1]))
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        warnings.warn(f"{getattr(ds, 'filename', '<dataset>')}: pixel spacing {list(spacing)} is not positive; using 1 mm.", stacklevel=4)
        return None
    return spacing


def _slice_gap(ds: Dataset) -> float | None:
    """SpacingBetweenSlices, else SliceThickness (classic or functional group), or ``None``."""
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        if ds.get(key) is not None:
            return float(ds.get(key))
        fg = _functional_group(ds, "PixelMeasuresSequence", 0)
        if fg is not None and fg.get(key) is not None:
            return float(fg.get(key))
    return None


def read_dicom_series(folder: str | Path) -> list[Dataset]:
    """Reads a folder holding one DICOM series and orders its slices along the slice normal.

    Files whose name starts with ``.`` and ``DICOMDIR`` are ignored; every other file must be a DICOM image of the
    same series. Slices are sorted by the projection of ImagePositionPatient on the normal of
    ImageOrientationPatient (``InstanceNumber`` only when no slice has a position).

    Args:
        folder: the series folder.

    Returns:
        The datasets, first slice first.

    Raises:
        ValueError: When ``folder`` is not a folder or holds no file; when a file is not a readable DICOM image
            (see :func:`read_dicom`); when the files belong to more than one SeriesInstanceUID, mix single- and
            multi-frame images, differ in size, samples per pixel or orientation; when some slices lack
            ImagePositionPatient and InstanceNumber; when two slices share a position.

    Example::

        >>> slices = read_dicom_series("../shared/data/dicom/ct_series")
        >>> len(slices)
        4
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_SLICES)
    if not files:
        raise ValueError(f"{folder}: empty folder, no DICOM file in it.")
    datasets = [read_dicom(f) for f in files]
    series: dict[str, list[str]] = {}
    for f, ds in zip(files, datasets):
        series.setdefault(str(ds.get("SeriesInstanceUID", "<missing>")), []).append(f.name)
    if len(series) > 1:
        parts = "; ".join(f"{uid}: {len(n)} file(s), e.g. {n[0]}" for uid, n in series.items())
        raise ValueError(f"{folder}: mixed series, {len(series)} SeriesInstanceUIDs in one folder ({parts}).")
    if len(datasets) == 1:
        return datasets
    ref = datasets[0]
    for f, ds in zip(files, datasets):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError(f"{f}: a multi-frame image inside a series folder of {len(files)} files.")
        for key in ("Rows", "Columns", "SamplesPerPixel"):
            if ds.get(key) != ref.get(key):
                raise ValueError(f"{f}: {key}={ds.get(key)} differs from {files[0].name} ({key}={ref.get(key)}).")
    return order_slices(datasets, names=[f.name for f in files], what=str(folder))


def order_slices(datasets: Sequence[Dataset], names: Sequence[str] | None = None, what: str = "series") -> list[Dataset]:
    """Orders single-frame slices along the slice normal: the one slice-ordering rule of the package.

    Slices are sorted by the projection of ImagePositionPatient on the normal of ImageOrientationPatient
    (``InstanceNumber`` only when no slice has a position; stable for ties of InstanceNumber).

    Args:
        datasets: the slices (headers are enough).
        names: how to name each slice in messages (default: its ``filename`` or SOPInstanceUID).
        what: how to name the series in messages (e.g. its folder).

    Returns:
        The datasets, first slice first.

    Raises:
        ValueError: When orientations differ, when a slice lacks both ImagePositionPatient and InstanceNumber, when
            a position or orientation is not numeric, or when two slices share a position (names quoted).

    Example::

        >>> [ds.InstanceNumber for ds in order_slices(slices)]
        [1, 2, 3, 4]
    """
    datasets = list(datasets)
    if names is None:
        names = [str(getattr(ds, "filename", None) or f"SOP instance {ds.get('SOPInstanceUID', '?')}") for ds in datasets]
    if len(datasets) < 2:
        return datasets
    try:
        orients = [_orientation(ds) for ds in datasets]
        positions = [ds.get("ImagePositionPatient") for ds in datasets]
        have_positions = all(o is not None for o in orients) and all(p is not None for p in positions)
        if have_positions:
            for n, o in zip(names, orients):
                if not np.allclose(o, orients[0], atol=1e-4):
                    raise ValueError(f"{n}: ImageOrientationPatient {o.ravel().tolist()} differs from {names[0]}.")
            normal = np.cross(orients[0][0], orients[0][1])
            key = np.asarray([[float(v) for v in p] for p in positions]) @ normal
        elif all("InstanceNumber" in ds for ds in datasets):
            warnings.warn(f"{what}: slices without ImagePositionPatient, ordered by InstanceNumber.", stacklevel=2)
            key = np.asarray([float(ds.InstanceNumber) for ds in datasets])
        else:
            bad = next(n for n, ds, p in zip(names, datasets, positions) if p is None and "InstanceNumber" not in ds)
            raise ValueError(f"{bad}: neither ImagePositionPatient nor InstanceNumber, cannot order the {what}.")
    except (TypeError, ValueError) as e:
        if str(e).startswith(tuple(names)) or str(e).startswith(what):
            raise
        raise ValueError(f"{what}: slice positions or orientations unreadable ({type(e).__name__}: {e}).") from e
    if not np.all(np.isfinite(key)):
        raise ValueError(f"{what}: slice positions are not finite numbers.")
    order = np.argsort(key, kind="stable")
    ks = key[order]
    dup = np.flatnonzero(np.diff(ks) < 1e-4)
    if dup.size:
        a, b = names[order[dup[0]]], names[order[dup[0] + 1]]
        raise ValueError(f"{what}: slices {a} and {b} share the same position ({ks[dup[0]]:.4f}).")
    return [datasets[i] for i in order]


class DicomReader(ImageReader):
    """Reads DICOM files and series folders for MONAI's ``LoadImage``: multi-frame, enhanced, RGB, MONOCHROME1,
    JPEG 2000 (with pylibjpeg), and series sorted by position.

    Output layout follows MONAI's ``PydicomReader`` (``swap_ij=True``): a 2D image is ``(columns, rows)``, a
    multi-frame image or a series ``(columns, rows, slices)``, colour images add a last channel axis (recorded
    as ``original_channel_dim=-1`` so ``ensure_channel_first`` moves it); the affine maps voxel indices to RAS mm.
    Stored values are mapped through the modality rescale (classic ``RescaleSlope``/``RescaleIntercept``, the
    enhanced ``PixelValueTransformationSequence`` per frame, or a ``ModalityLUTSequence``): HU for CT.
    The metadata records ``Modality``, ``BodyPartExamined``, ``SeriesInstanceUID``, ``SOPClassUID``,
    ``PhotometricInterpretation``, ``intensity_units``, ``rescale_slope``/``rescale_intercept`` (NaN when they vary
    across frames) and ``monochrome1_inverted``.

    Args:
        rescale: apply the modality rescale (stored value -> HU / physical value). Default ``True``.
        invert_monochrome1: map MONOCHROME1 stored values ``v`` to ``min + max - v`` (over the BitsStored range)
            so that, as in MONOCHROME2, higher means brighter. Default ``True``; recorded in the metadata.
        affine_lps_to_ras: return the affine in RAS (as ``NibabelReader`` and MONAI's reader do). Default ``True``.

    Raises:
        ValueError: From :meth:`read` / :meth:`get_data` for a bad file, naming it (see :func:`read_dicom`,
            :func:`read_dicom_series`), or when the pixel data cannot be decoded.

    Example::

        >>> from monai.transforms import LoadImage
        >>> loader = LoadImage(image_only=True, ensure_channel_first=True)
        >>> loader.register(DicomReader())  # tried first for DICOM paths, NIfTI/PNG still use MONAI's readers
        >>> loader("../shared/data/dicom/US1_UNCR.dcm").shape
        torch.Size([3, 640, 480])
    """

    def __init__(self, rescale: bool = True, invert_monochrome1: bool = True, affine_lps_to_ras: bool = True) -> None:
        super().__init__()
        self.rescale = bool(rescale)
        self.invert_monochrome1 = bool(invert_monochrome1)
        self.affine_lps_to_ras = bool(affine_lps_to_ras)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Whether every name is a DICOM file or a folder (series), see :func:`is_dicom_input`."""
        return all(is_dicom_input(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> list[list[Dataset]]:
        """Reads and checks each file (one image) or folder (one series).

        Returns:
            One list of datasets per input, slices in order.
        """
        return [read_dicom_series(p) if Path(p).is_dir() else [read_dicom(p)] for p in ensure_tuple(data)]

    def get_data(self, img: list[list[Dataset]]) -> tuple[np.ndarray, dict]:
        """The image array and metadata; several inputs are stacked on a new first (channel) axis.

        Raises:
            ValueError: When pixel data cannot be decoded, or stacked inputs differ in shape or are colour.
        """
        arrays, metas = zip(*(self._named_volume(slices) for slices in img))
        if len(arrays) == 1:
            return arrays[0], metas[0]
        if len({a.shape for a in arrays}) > 1 or any(m[MetaKeys.ORIGINAL_CHANNEL_DIM] == -1 for m in metas):
            names = [m["filename"] for m in metas]
            raise ValueError(f"cannot stack DICOM inputs of different shapes or with colour as channels: {names}.")
        meta = dict(metas[0])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

    def _named_volume(self, slices: list[Dataset]) -> tuple[np.ndarray, dict]:
        """:meth:`_volume` with every failure a ``ValueError`` that names the file (or the first slice)."""
        name = _source_name(slices[0])
        try:
            return self._volume(slices)
        except ValueError as e:
            if str(e).startswith(name) or (len(slices) > 1 and str(Path(name).parent) in str(e)):
                raise
            raise ValueError(f"{name}: unusable image header ({e}).") from e
        except Exception as e:  # e.g. a position or spacing that is not a number
            raise ValueError(f"{name}: unusable image header ({type(e).__name__}: {e}).") from e

    def _volume(self, slices: list[Dataset]) -> tuple[np.ndarray, dict]:
        """One file or one sorted series -> ``(columns, rows[, slices][, 3])`` array and its metadata."""
        first = slices[0]
        name = str(getattr(first, "filename", "<dataset>"))
        if len(slices) > 1:
            name = str(Path(name).parent)
        frames, slopes, intercepts, inverted = [], [], [], False
        for ds in slices:
            arr, sl, ic, inverted = self._checked_frames(ds)
            frames.append(arr)
            slopes.append(sl)
            intercepts.append(ic)
        data = np.concatenate(frames, axis=0)  # (slices, rows, cols[, 3])
        slope, intercept = np.concatenate(slopes), np.concatenate(intercepts)
        affine, data = self._affine(slices, data)
        colour = data.ndim == 4
        data = data.transpose((2, 1, 0, 3) if colour else (2, 1, 0))  # -> (cols, rows, slices[, 3])
        if data.shape[2] == 1:
            data = data[:, :, 0]
        spatial = data.shape[:-1] if colour else data.shape
        modality = str(first.get("Modality", ""))
        rescaled = self.rescale and not colour and bool(np.any(slope != 1) or np.any(intercept != 0))
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(spatial),
            MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if colour else float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            "spacing": np.sqrt((affine[:3, : len(spatial)] ** 2).sum(0)),
            "filename": name,
            "Modality": modality,
            "BodyPartExamined": str(first.get("BodyPartExamined", "") or ""),
            "SOPClassUID": str(first.get("SOPClassUID", "")),
            "SeriesInstanceUID": str(first.get("SeriesInstanceUID", "")),
            "PhotometricInterpretation": str(first.get("PhotometricInterpretation", "")),
            "intensity_units": "HU" if rescaled and modality == "CT" else ("rescaled value" if rescaled else "stored value"),
            "rescale_slope": float(slope[0]) if np.all(slope == slope[0]) else float("nan"),
            "rescale_intercept": float(intercept[0]) if np.all(intercept == intercept[0]) else float("nan"),
            "monochrome1_inverted": inverted,
        }
        return data, meta

    def frames(self, ds: Dataset) -> np.ndarray:
        """Each frame of one instance, in file order, channel first in this reader's layout.

        A frame is laid out as ``LoadImage(ensure_channel_first=True)`` with this reader gives a single-frame
        file: ``(C, columns, rows)``, values after inversion and rescale (see the class docstring).

        Args:
            ds: a DICOM image dataset (pixel data may be deferred).

        Returns:
            float32 array ``(frames, C, columns, rows)`` (``C`` is 3 for colour, else 1).

        Raises:
            ValueError: When the pixel data cannot be decoded or the values are unusable, naming the file.

        Example::

            >>> DicomReader().frames(pydicom.dcmread("../shared/data/dicom/emri_small.dcm")).shape
            (10, 1, 64, 64)
        """
        arr = self._checked_frames(ds)[0]
        return arr.transpose(0, 3, 2, 1) if arr.ndim == 4 else arr.transpose(0, 2, 1)[:, None]

    def _checked_frames(self, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """:meth:`_frames` with every failure a ``ValueError`` naming the file, and non-finite values refused."""
        name = _source_name(ds)
        try:
            out = self._frames(ds)
        except ValueError as e:
            if str(e).startswith(name):
                raise
            raise ValueError(f"{name}: unusable image ({e}).") from e
        except Exception as e:  # a header pydicom parsed but that does not describe an image it can decode
            raise ValueError(f"{name}: cannot decode pixel data ({type(e).__name__}: {e}).") from e
        if not np.all(np.isfinite(out[0])):
            raise ValueError(
                f"{name}: pixel values are not all finite after the modality rescale (RescaleSlope "
                f"{ds.get('RescaleSlope', '-')}, RescaleIntercept {ds.get('RescaleIntercept', '-')})."
            )
        return out

    def _frames(self, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Decoded frames ``(frames, rows, cols[, 3])`` as float32 after inversion and rescale, with the per-frame
        slopes and intercepts that were applied and whether MONOCHROME1 was inverted."""
        name = _source_name(ds)
        raw_frames = ds.get("NumberOfFrames", 1)
        try:
            num_frames = int(1 if raw_frames in (None, "") else raw_frames)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: NumberOfFrames {raw_frames!r} is not an integer.") from None
        if num_frames < 1:
            raise ValueError(f"{name}: NumberOfFrames is {num_frames}; an image needs at least one frame.")
        try:
            arr = ds.pixel_array
        except Exception as e:
            hint = ""
            tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            if tsyntax is not None and tsyntax.is_compressed:
                hint = " (compressed pixel data: JPEG 2000 / JPEG-LS need the 'dicom' extra: pylibjpeg, pylibjpeg-openjpeg)"
            raise ValueError(f"{name}: cannot decode pixel data{hint}: {type(e).__name__}: {e}") from e
        if num_frames > 1 and arr.shape[0] != num_frames:
            raise ValueError(f"{name}: {arr.shape[0]} frames decoded, NumberOfFrames says {num_frames}.")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if photometric == "PALETTE COLOR":
            arr = pydicom.pixels.apply_color_lut(arr, ds)
        colour = int(ds.get("SamplesPerPixel", 1)) > 1 or photometric == "PALETTE COLOR"
        if num_frames == 1:
            arr = arr[None]
        inverted = False
        if photometric == "MONOCHROME1" and self.invert_monochrome1:
            bits = int(ds.get("BitsStored", ds.BitsAllocated))
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation", 0)) else (0, 2**bits - 1)
            arr = (lo + hi) - arr.astype(np.int64)
            inverted = True
        ones, zeros = np.ones(num_frames), np.zeros(num_frames)
        if colour or not self.rescale:
            return arr.astype(np.float32), ones, zeros, inverted
        if "ModalityLUTSequence" in ds:
            return pydicom.pixels.apply_modality_lut(arr, ds).astype(np.float32), ones, zeros, inverted
        slope, intercept = ones.copy(), zeros.copy()
        if "RescaleSlope" in ds or "RescaleIntercept" in ds:
            slope[:] = float(ds.RescaleSlope) if ds.get("RescaleSlope") not in (None, "") else 1.0
            intercept[:] = float(ds.RescaleIntercept) if ds.get("RescaleIntercept") not in (None, "") else 0.0
        else:
            for i in range(num_frames):
                fg = _functional_group(ds, "PixelValueTransformationSequence", i)
                if fg is not None:
                    slope[i] = float(fg.get("RescaleSlope", 1.0))
                    intercept[i] = float(fg.get("RescaleIntercept", 0.0))
        if not (np.all(np.isfinite(slope)) and np.all(np.isfinite(intercept))):
            raise ValueError(f"{name}: RescaleSlope/RescaleIntercept {float(slope[0])}/{float(intercept[0])} are not finite.")
        shape = (num_frames,) + (1,) * (arr.ndim - 1)
        out = arr.astype(np.float32) * slope.reshape(shape).astype(np.float32) + intercept.reshape(shape).astype(np.float32)
        return out, slope, intercept, inverted

    def _affine(self, slices: list[Dataset], data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 4x4 voxel-to-world affine for array axes ``(column, row, slice)``; frames of a multi-frame file are
        sorted along the slice normal when every frame has a position (``data`` is reordered to match)."""
        first = slices[0]
        orient = _orientation(first)
        row_dir, col_dir = (orient[0], orient[1]) if orient is not None else (np.eye(3)[0], np.eye(3)[1])
        normal = np.cross(row_dir, col_dir)
        spacing = _pixel_spacing(first) or (1.0, 1.0)
        n = data.shape[0]
        if len(slices) > 1:
            pos = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in slices if "ImagePositionPatient" in ds])
            pos = pos if len(pos) == n else None
        elif n > 1:
            pos = _frame_positions(first, n)
            if pos is not None:
                order = np.argsort(pos @ normal, kind="stable")
                pos, data = pos[order], data[order]
        else:
            ipp = first.get("ImagePositionPatient")
            pos = None if ipp is None else np.asarray([[float(v) for v in ipp]])
        affine = np.eye(4)
        affine[:3, 0] = row_dir * spacing[1]  # along a row = increasing column index
        affine[:3, 1] = col_dir * spacing[0]
        affine[:3, 2] = normal
        if pos is not None:
            affine[:3, 3] = pos[0]
        if n > 1:
            if pos is not None:
                gaps = np.diff(pos @ normal)
                affine[:3, 2] = (pos[-1] - pos[0]) / (n - 1)
                if np.ptp(gaps) > 1e-3 * max(abs(float(np.mean(gaps))), 1e-6) + 1e-4:
                    name = Path(str(getattr(first, "filename", ""))).parent if len(slices) > 1 else first.filename
                    warnings.warn(
                        f"{name}: non-uniform slice spacing {np.round(gaps, 4).tolist()} mm; the affine uses the mean "
                        f"{float(np.mean(gaps)):.4f} mm.",
                        stacklevel=3,
                    )
            else:
                affine[:3, 2] = normal * (_slice_gap(first) or 1.0)
        if self.affine_lps_to_ras:
            affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        return affine, data
