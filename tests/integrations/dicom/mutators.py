# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Deterministic mutators of real DICOM files for the fuzz suite and the issue-18 regression tests: each takes the
bytes of a real file and a ``random.Random`` and returns the bytes of a damaged copy (or builds an odd file-system
entry). Families: truncation, header and pixel byte flips, deleted required tags, absurd values, wrong transfer
syntax, hostile UIDs, non-DICOM content, odd file-system entries."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom import config

EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"
# 20-byte replacements of the transfer syntax UID (same length: the file meta group length stays right)
WRONG_SYNTAXES = [
    b"1.2.840.10008.1.2.2\x00",  # explicit VR big endian: the data are little endian
    b"1.2.840.10008.1.2.5\x00",  # RLE lossless: the data are not encapsulated
    b"1.2.840.10008.9.9.9\x00",  # a UID that is no transfer syntax
    b"1.2.840.10008.5.1.4\x00",  # a real UID root, not a transfer syntax
    b"ABCDEFGHIJKLMNOPQRS\x00",  # not a UID at all
    b"1.2.840.10008.1.2.1.",  # no padding, a trailing dot
]
HOSTILE_UIDS = [
    "../../escaped",
    "../../../../../../tmp/monai_robust_fuzz_escaped",
    "/tmp/monai_robust_fuzz_abs",
    "1.2.3/4",
    "..",
    ".",
    "",
    "1" * 200,
    "1.2.\x00.3",
    "C:\\windows\\escaped",
    "série-μ-⚕",
    "1.2.3\n4",
    "~/escaped",
    "1..2",
    "01.2.3",
]
REQUIRED = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "SamplesPerPixel", "PhotometricInterpretation", "PixelRepresentation", "PixelData", "Modality",
    "PatientID", "HighBit", "NumberOfFrames",
]  # fmt: skip
ABSURD: list[tuple[str, object]] = [
    ("Rows", 0), ("Rows", 65535), ("Columns", 0), ("Columns", 65535), ("BitsAllocated", 7), ("BitsAllocated", 64),
    ("BitsStored", 40), ("HighBit", 99), ("SamplesPerPixel", 0), ("SamplesPerPixel", 4), ("PixelRepresentation", 5),
    ("NumberOfFrames", "0"), ("NumberOfFrames", "-1"), ("NumberOfFrames", "99999"), ("NumberOfFrames", "abc"),
    ("RescaleSlope", "0"), ("RescaleSlope", "NaN"), ("RescaleSlope", "1e309"), ("RescaleSlope", "1e38"),
    ("RescaleSlope", "-1e30"), ("RescaleIntercept", "1e38"), ("RescaleIntercept", "-inf"), ("RescaleIntercept", "x"),
    ("PhotometricInterpretation", "XYZ"), ("PhotometricInterpretation", "PALETTE COLOR"),
    ("PhotometricInterpretation", "YBR_FULL"), ("PixelSpacing", ["0", "-1"]), ("PixelSpacing", ["a", "b"]),
    ("ImagePositionPatient", ["a", "b", "c"]), ("ImageOrientationPatient", ["0", "0", "0", "0", "0", "0"]),
    ("ImageOrientationPatient", ["1"]), ("Modality", "C" * 40), ("InstanceNumber", "1e400"),
]  # fmt: skip


def _rewrite(data: bytes, edit: Callable[[pydicom.Dataset], None]) -> bytes:
    """Reads, edits and writes a dataset with pydicom's value validation off (values may be invalid on purpose)."""
    old = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        edit(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = old


def _pixel_offset(data: bytes) -> int:
    i = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    return i if i > 0 else len(data) // 2


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def flip_header(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    end = _pixel_offset(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(128, max(129, end))] ^= 1 << rng.randrange(8)
    return bytes(b)


def flip_pixels(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    start = _pixel_offset(data)
    for _ in range(rng.randint(1, 64)):
        b[rng.randrange(start, len(b))] = rng.randrange(256)
    return bytes(b)


def delete_tags(data: bytes, rng: random.Random) -> bytes:
    names = rng.sample(REQUIRED, rng.randint(1, 3))

    def edit(ds: pydicom.Dataset) -> None:
        for n in names:
            if n in ds:
                delattr(ds, n)

    return _rewrite(data, edit)


def absurd_value(data: bytes, rng: random.Random) -> bytes:
    key, value = rng.choice(ABSURD)
    return _rewrite(data, lambda ds: setattr(ds, key, value))


def wrong_transfer_syntax(data: bytes, rng: random.Random) -> bytes:
    if EXPLICIT_LE not in data[:1024]:
        return data[:132] + b"\x02\x00\x10\x00UI\x14\x00" + rng.choice(WRONG_SYNTAXES) + data[132:]
    return data.replace(EXPLICIT_LE, rng.choice(WRONG_SYNTAXES), 1)


# explicit-VR element headers whose VR gets replaced: SOP Class UID, Patient's Name, Series Instance UID, Rows
_VR_TARGETS = [b"\x08\x00\x16\x00UI", b"\x10\x00\x10\x00PN", b"\x20\x00\x0e\x00UI", b"\x28\x00\x10\x00US"]


def unknown_vr(data: bytes, rng: random.Random) -> bytes:
    """An element (SOP Class UID, PatientName, SeriesInstanceUID or Rows) with the VR 'QI' (or another unknown VR)."""
    vr = rng.choice([b"QI", b"ZZ", b"\x00\x00", b"ui"])
    target = rng.choice([t for t in _VR_TARGETS if t in data] or _VR_TARGETS[:1])
    return data.replace(target, target[:4] + vr, 1)


def hostile_uid(data: bytes, rng: random.Random) -> bytes:
    key = rng.choice(["SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "PatientID"])
    value = rng.choice(HOSTILE_UIDS)
    return _rewrite(data, lambda ds: setattr(ds, key, value))


def non_dicom(_data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 2:
        return b"\x89PNG\r\n\x1a\n" + rng.randbytes(200)
    if kind == 3:
        return b"\x00" * 128 + b"DICM" + rng.randbytes(rng.randrange(0, 300))
    if kind == 4:
        return b'{"not": "dicom"}\n'
    return b"\x00" * 128 + b"DICM"


FILE_MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncation": truncate,
    "header_flip": flip_header,
    "pixel_flip": flip_pixels,
    "deleted_tag": delete_tags,
    "absurd_value": absurd_value,
    "wrong_transfer_syntax": wrong_transfer_syntax,
    "unknown_vr": unknown_vr,
    "hostile_uid": hostile_uid,
    "non_dicom": non_dicom,
}


def odd_entry(folder: Path, i: int, rng: random.Random) -> Path:
    """An odd file-system entry in ``folder``: a folder named like a DICOM file, a dangling symlink, a FIFO, a symlink
    loop, or a symlink to a folder outside."""
    kind = i % 5
    path = folder / f"odd_{i}.dcm"
    if kind == 0:
        path.mkdir()
    elif kind == 1:
        path.symlink_to(folder / f"missing_{i}.dcm")
    elif kind == 2:
        os.mkfifo(path)
    elif kind == 3:
        loop = folder / f"loop_{i}"
        loop.symlink_to(path)
        path.symlink_to(loop)
    else:
        path.symlink_to("/proc/self/fd/0")
    return path
