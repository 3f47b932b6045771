# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Safe output names: file names built only from validated DICOM UIDs (or hashes), kept inside the output folder, and
never reused (a result written twice gets a new version, not an overwrite)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["claim_paths", "inside", "is_valid_uid", "result_stem", "safe_uid"]

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_MAX_VERSIONS = 10_000


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` follows the DICOM UID grammar (PS3.5 9.1): digits and dots, no empty or zero-led component,
    at most 64 characters.

    Args:
        value: anything.

    Returns:
        ``True`` for a valid UID string.

    Example::

        >>> is_valid_uid("1.2.840.10008.1.2"), is_valid_uid("../../escaped")
        (True, False)
    """
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def _digest(*parts: object, n: int = 16) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()[:n]


def safe_uid(value: object) -> str:
    """A UID usable as a file name: the UID itself when valid, else ``"h"`` + 16 hex digits of its SHA-256.

    Args:
        value: the UID as received (any string, possibly hostile: ``"../x"``, ``"/etc"``, ``"a\\x00b"``).

    Returns:
        Only digits, dots or ``h`` + hex digits; never empty, never ``"."`` or ``".."``.

    Example::

        >>> safe_uid("1.2.3"), safe_uid("../../escaped")
        ('1.2.3', 'hea03bc47f879c94c')
    """
    text = "" if value is None else str(value)
    return text if is_valid_uid(text) else "h" + _digest(text)


def result_stem(patient_id: object, study_uid: object, series_uid: object, content: object = "") -> str:
    """The file stem of one series' result: the (safe) SeriesInstanceUID and a short hash of patient, study, series
    and content, so that two patients' series sharing a SeriesInstanceUID do not share a file name.

    Args:
        patient_id: PatientID (``""`` when absent).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        content: what was screened (e.g. a model name), part of the hash.

    Returns:
        ``"<series uid or hash>_<10 hex digits>"``.

    Example::

        >>> result_stem("P1", "1.2", "1.2.3")
        '1.2.3_ed73abab61'
    """
    return f"{safe_uid(series_uid)}_{_digest(patient_id, study_uid, series_uid, content, n=10)}"


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, checked to resolve inside ``folder`` (no ``..``, no absolute name, no symlink out).

    Args:
        folder: the output folder.
        name: a file name.

    Returns:
        The path.

    Raises:
        ValueError: When the path would leave ``folder`` (both quoted).

    Example::

        >>> inside("out", "1.2.3_ab.json")
        PosixPath('out/1.2.3_ab.json')
    """
    root = Path(folder).resolve()
    path = Path(folder) / name
    if os.sep in name or (os.altsep and os.altsep in name) or name in ("", ".", "..") or "\x00" in name:
        raise ValueError(f"output name {name!r} is not a plain file name; refusing to write outside {str(folder)!r}.")
    if path.resolve().parent != root:
        raise ValueError(f"output path {str(path)!r} resolves outside {str(folder)!r}; refusing to write it.")
    return path


def claim_paths(folder: str | os.PathLike, stem: str, suffixes: Sequence[str]) -> tuple[dict[str, Path], int]:
    """Reserves the first version of ``stem`` whose files do not exist yet: ``stem + suffix`` for version 1, then
    ``stem + ".v2" + suffix``, ...; the last suffix's file is created empty (exclusive create), so two writers never
    get the same version.

    Args:
        folder: the output folder (must exist).
        stem: from :func:`result_stem`.
        suffixes: e.g. ``(".SR.dcm", ".json")``.

    Returns:
        ``({suffix: path}, version)``.

    Raises:
        ValueError: When a path would leave ``folder``.
        FileExistsError: After 10,000 versions.

    Example::

        >>> claim_paths("out", "1.2.3_ab", [".json"])
        ({'.json': PosixPath('out/1.2.3_ab.json')}, 1)
    """
    for version in range(1, _MAX_VERSIONS + 1):
        tag = "" if version == 1 else f".v{version}"
        paths = {s: inside(folder, f"{stem}{tag}{s}") for s in suffixes}
        if any(p.exists() or p.is_symlink() for p in paths.values()):
            continue
        try:
            with open(paths[suffixes[-1]], "x"):
                pass
        except FileExistsError:
            continue
        return paths, version
    raise FileExistsError(f"{folder}: {_MAX_VERSIONS} versions of {stem!r} already exist.")
