# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Finding, reading and selecting DICOM instances: the input side of screening.

Every function here turns a problem with one file into a ``ValueError`` (or a reported entry) that names the file,
so that callers can report it and go on with the others.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

__all__ = [
    "MODALITY_TERMS",
    "SeriesRules",
    "find_dicom_files",
    "image_problem",
    "non_image_reason",
    "read_header",
    "scan_inputs",
    "source_name",
    "source_path",
]

_DEFER_SIZE = "64 KB"  # elements larger than this (pixel data) are read from the file when used
_DICOM_SUFFIXES = (".dcm", ".dicom")
# DICOM PS3.3 C.7.3.1.1.1 Modality defined terms, current and retired
MODALITY_TERMS = frozenset(
    """AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DMS DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL IVOCT IVUS
    KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE
    RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA
    XAPROTOCOL XC AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF""".split()
)
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
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


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
        modalities: DICOM Modality defined terms (:data:`MODALITY_TERMS`), e.g. ``("CR", "DX")``; ``None`` = any.
        image_types: values that must all appear in ImageType, e.g. ``("ORIGINAL", "PRIMARY")``; ``None`` = any.
        body_parts: e.g. ``("CHEST",)``; an instance without BodyPartExamined is then not selected. ``None`` = any.

    Raises:
        ValueError: When a rule is given as an empty list or holds an empty string, or a modality is not a DICOM
            defined term (the message lists the close matches: an unquoted ``*`` expanded by the shell to file
            names is caught here).

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
        for m in self.modalities or ():
            if m not in MODALITY_TERMS:
                close = difflib.get_close_matches(m, sorted(MODALITY_TERMS), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ValueError(
                    f"modality {m!r} is not a DICOM Modality defined term (PS3.3 C.7.3.1.1.1){hint} "
                    "(quote '*' on the command line to screen any modality)."
                )

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


def source_path(ds: Dataset) -> str | None:
    """The file a dataset was read from, or ``None`` for a dataset built in memory."""
    filename = getattr(ds, "filename", None)
    return str(filename) if isinstance(filename, (str, os.PathLike)) and str(filename) else None


def source_name(ds: Dataset) -> str:
    """The file a dataset came from, or its SOPInstanceUID, for messages."""
    return source_path(ds) or f"SOP instance {ds.get('SOPInstanceUID', '<no SOPInstanceUID>')}"


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


def image_problem(ds: Dataset) -> str | None:
    """Why an image object cannot be decoded (missing image-pixel attributes, no frame, truncated pixel data), or
    ``None``.

    Args:
        ds: an image dataset (pixel data may be deferred).

    Returns:
        A sentence, or ``None``.
    """
    missing = [k for k in _IMAGE_ATTRIBUTES if k not in ds]
    if missing:
        return f"image attributes missing ({', '.join(missing)}); the header is incomplete or corrupt"
    try:
        frames = ds.get("NumberOfFrames", 1)
        if frames not in (None, "") and int(frames) < 1:
            return f"NumberOfFrames is {int(frames)}; an image needs at least one frame"
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if tsyntax is not None and not tsyntax.is_encapsulated and "PixelData" in ds:
            expected = pydicom.pixels.utils.get_expected_length(ds, unit="bytes")
            got = len(ds.PixelData)
            if got < expected:
                return f"truncated pixel data, {got} of {expected} bytes"
    except Exception as e:  # absurd values, a deferred read of a file that has gone or changed
        return f"image header unusable ({type(e).__name__}: {e})"
    return None


def scan_inputs(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to read and odd entries to report, from files and folders (recursive, sorted; hidden entries and
    ``DICOMDIR`` left out).

    Odd entries are dangling symbolic links, entries that are not regular files (FIFOs, sockets, devices: never
    opened, reading them could block) and empty folders named like DICOM files (``x.dcm/``).

    Args:
        paths: files and folders.

    Returns:
        ``(files, problems)``; each problem is ``(path, reason)``.

    Raises:
        ValueError: When a path given does not exist.

    Example::

        >>> files, problems = scan_inputs(["../shared/data/dicom"])
        >>> len(files), problems
        (10, [])
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def visit(p: Path) -> None:
        if p.is_symlink() and not p.exists():
            problems.append((p, f"dangling symbolic link (to {os.readlink(p)!r})"))
            return
        try:
            mode = p.stat().st_mode
        except OSError as e:
            problems.append((p, f"cannot be examined ({type(e).__name__}: {e})"))
            return
        if stat.S_ISREG(mode):
            files.append(p)
        elif stat.S_ISDIR(mode):
            if p.suffix.lower() in _DICOM_SUFFIXES and not any(f.is_file() for f in p.rglob("*")):
                problems.append((p, "a folder named like a DICOM file, with no file in it"))
        else:
            problems.append((p, "not a regular file (FIFO, socket or device): not read"))

    for root in map(Path, paths):
        if not root.exists() and not root.is_symlink():
            raise ValueError(f"{root}: no such file or folder.")
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.name == "DICOMDIR" or any(part.startswith(".") for part in f.relative_to(root).parts):
                    continue
                if f.is_dir() and not f.is_symlink():
                    if f.suffix.lower() in _DICOM_SUFFIXES:
                        visit(f)
                    continue
                visit(f)
        else:
            visit(root)
    return files, problems


def find_dicom_files(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The regular files of :func:`scan_inputs` (non-DICOM files included: reading them reports them).

    Args:
        paths: files and folders.

    Returns:
        The file paths.

    Raises:
        ValueError: When a path does not exist.

    Example::

        >>> len(find_dicom_files("../shared/data/dicom"))
        10
    """
    return scan_inputs(paths)[0]


def read_header(path: str | os.PathLike) -> Dataset:
    """Reads one file with large elements deferred and parses every top-level element now, so that a corrupt
    header fails here, naming the file, and not later in the middle of a series.

    Args:
        path: the file.

    Returns:
        The dataset (``ds.filename`` is ``path``).

    Raises:
        ValueError: For anything that makes the file unusable: not DICOM, truncated, a (0002,0010) that is not a
            transfer syntax, an unknown VR, missing Study/Series/SOP Instance UID or SOP Class UID. The message
            starts with the path.

    Example::

        >>> read_header("../shared/data/dicom/RG1_J2KI.dcm").Modality
        'CR'
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
        for _ in ds.file_meta if getattr(ds, "file_meta", None) is not None else ():
            pass
        for _ in ds:  # converts every raw element: an unknown VR or a bad value raises here
            pass
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if tsyntax is not None:
            _ = tsyntax.is_encapsulated  # "UID is not a transfer syntax" for a bad (0002,0010)
        missing = [k for k in _REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
        multi = [k for k in _REQUIRED_UIDS if isinstance(ds.get(k), MultiValue)]
    except InvalidDicomError as e:
        raise ValueError(f"{path}: not a DICOM file ({e}).") from e
    except Exception as e:  # EOFError, struct.error, NotImplementedError (unknown VR), ValueError (bad UID), ...
        raise ValueError(f"{path}: unreadable DICOM file ({type(e).__name__}: {e}).") from e
    if missing:
        raise ValueError(f"{path}: DICOM file without {', '.join(missing)}; the header is incomplete or corrupt.")
    if multi:
        raise ValueError(
            f"{path}: {', '.join(multi)} with several values (a backslash in a UID); the header is corrupt."
        )
    return ds
