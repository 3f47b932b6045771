# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The node's spool: every received instance is on disk, flushed (``fsync``), before the C-STORE is answered.

Layout: one folder per batch of a series as the node receives it, ``<spool>/<random hex>/``, holding
``series.json`` (StudyInstanceUID, SeriesInstanceUID, calling AE titles), one ``<SOP UID or hash>.<n>.dcm`` per
received instance (the bytes as received, with the file meta) and, once the series is complete, an empty
``COMPLETE`` marker. A folder is removed after its series was screened and its result written or sent. On a start,
every folder still there is screened again: with the marker as a complete series, without it as a partial one (the
node stopped before the series was complete).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from monai_robust.integrations.dicom.names import safe_uid

__all__ = ["Spool", "SpooledSeries"]

logger = logging.getLogger(__name__)

_COMPLETE = "COMPLETE"
_KEY = "series.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file, fsyncs it, renames it to ``path`` and fsyncs the folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _arrival(path: Path) -> int:
    """The arrival number ``n`` of ``<uid>.<n>.dcm``."""
    number = path.name.rsplit(".", 2)[-2]
    return int(number) if number.isdigit() else 0


@dataclass
class SpooledSeries:
    """One spooled batch of a series.

    Attributes:
        folder: its spool folder.
        study_uid, series_uid: the series.
        callers: calling AE titles that sent it.
        files: the instances, in order of arrival.
        complete: whether the series was complete (marker written) when last seen.
    """

    folder: Path
    study_uid: str
    series_uid: str
    callers: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    complete: bool = False


class Spool:
    """Received instances on disk until screened (see the module docstring).

    Args:
        folder: the spool folder (created).

    Raises:
        ValueError: When ``folder`` exists and is not a folder.

    Example::

        >>> spool = Spool("results/.spool")
        >>> batch = spool.open_series("1.2.3", "1.2.3.4", "MODALITY")
        >>> spool.put(batch, encoded_bytes, "1.2.3.4.5")  # on disk and fsynced when this returns
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"spool {str(self.folder)!r} exists and is not a folder.")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._counter = 0

    def open_series(self, study_uid: str, series_uid: str, caller: str) -> Path:
        """A new spool folder for a batch of a series, with its ``series.json`` on disk.

        Returns:
            The folder.
        """
        folder = self.folder / secrets.token_hex(8)
        folder.mkdir()
        key = {"study_instance_uid": study_uid, "series_instance_uid": series_uid, "callers": [caller]}
        _write_durably(folder / _KEY, json.dumps(key).encode())
        _fsync_dir(self.folder)
        return folder

    def put(self, folder: Path, data: bytes, sop_uid: str) -> Path:
        """Writes one received instance into a series folder, durably (fsync of the file and the folder).

        Args:
            folder: from :meth:`open_series`.
            data: the encoded instance (DICOM file with meta).
            sop_uid: its SOPInstanceUID (names the file, hashed when it is not a valid UID).

        Returns:
            The file.

        Raises:
            OSError: When the disk refuses (full, read-only): the caller must not acknowledge the instance.
        """
        with self._lock:
            self._counter += 1
            n = self._counter
        path = folder / f"{safe_uid(sop_uid)}.{n}.dcm"
        _write_durably(path, data)
        return path

    def mark_complete(self, folder: Path) -> None:
        """Records that the series of ``folder`` was complete (its association released, or it idled out)."""
        if folder.is_dir():
            _write_durably(folder / _COMPLETE, b"")

    def remove(self, folder: Path) -> None:
        """Deletes a screened batch."""
        shutil.rmtree(folder, ignore_errors=True)

    def pending(self) -> list[SpooledSeries]:
        """The batches still in the spool (e.g. after a crash), oldest first; temporary files of writes that were
        never completed (hence never acknowledged) are deleted."""
        out = []
        for folder in sorted(self.folder.iterdir(), key=lambda p: p.stat().st_mtime):
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            try:
                key = json.loads((folder / _KEY).read_text())
            except (OSError, ValueError) as e:
                logger.error("spool folder %s has no readable %s (%s); left in place, not screened", folder, _KEY, e)
                continue
            files = sorted(folder.glob("*.dcm"), key=_arrival)
            out.append(
                SpooledSeries(
                    folder,
                    str(key.get("study_instance_uid", "")),
                    str(key.get("series_instance_uid", "")),
                    list(key.get("callers", [])),
                    files,
                    (folder / _COMPLETE).exists(),
                )
            )
        return out
