# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""What the DICOM node does with a completed series: read it back from the spool, screen it, write and send the SR,
and log every step (the receiving side is :mod:`monai_robust.integrations.dicom.node`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_robust.integrations.dicom.peer import DeliveryStatus, DicomPeer, sop_name
from monai_robust.integrations.dicom.results import write_result
from monai_robust.integrations.dicom.series import read_header

__all__ = ["NodeRecord", "ReceivedSeries", "SeriesHandler"]

logger = logging.getLogger("monai_robust.integrations.dicom.node")  # one logger for everything the node does


@dataclass
class NodeRecord:
    """What the node did with one received series.

    Attributes:
        study_uid, series_uid: the series.
        calling_ae: AE title of the peer that sent it (``"a@b"`` joined when several did).
        n_instances: image instances received; ``n_skipped``: non-image instances (not screened).
        status: ``"screened"``, ``"skipped"``, ``"not screened"`` or ``"failed"`` (as ``SeriesResult.status``).
        reason: why (from the screener, or the node's own reason: non-image SOP class, screening error).
        sr_uid: the SR's SOPInstanceUID, when one was made.
        delivery: the C-STORE outcome at the destination (``None`` when there is no destination or no SR).
        files: files written (``{"sr": path, "json": path}``), empty when none.
        result: the screener's ``SeriesResult`` (``None`` for series the node skipped itself).
        partial: the series was cut off (aborted association, node stopped or killed before it was complete).
    """

    study_uid: str
    series_uid: str
    calling_ae: str
    n_instances: int
    n_skipped: int
    status: str
    reason: str
    sr_uid: str | None = None
    delivery: DeliveryStatus | None = None
    files: dict[str, Path] = field(default_factory=dict)
    result: Any = None
    partial: bool = False


@dataclass
class ReceivedSeries:
    """A series (one batch of it) as the node received it: its spool folder and files, who sent it, whether it was
    cut off; the worker fills ``images``/``skipped``/``unreadable`` when it reads the files back."""

    study_uid: str
    series_uid: str
    folder: Path  # its spool folder
    files: list[Path] = field(default_factory=list)
    callers: set[str] = field(default_factory=set)
    open_assocs: set[int] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    partial: bool = False
    images: list[Dataset] = field(default_factory=list)  # read back from the spool by the worker
    skipped: list[str] = field(default_factory=list)  # SOP class names of non-image instances
    unreadable: list[str] = field(default_factory=list)  # spool files that cannot be read back, with the reason


def _is_image(ds: Dataset) -> bool:
    sop_class = UID(str(getattr(ds, "SOPClassUID", "")))
    return "Image Storage" in sop_class.name and (
        "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    )


class SeriesHandler:
    """Screens completed series and delivers the results (the node's worker thread runs :meth:`process`).

    Args:
        screener: ``screen_datasets(datasets, partial=[(study, series), ...]) -> results``.
        output_dir: folder for every result, or ``None``.
        undelivered_dir: folder for SRs the destination did not accept when there is no ``output_dir``.
        destination: where SRs go (a :class:`DicomPeer` or a STOW-RS destination), or ``None``.
        send: ``send(dataset, destination) -> DeliveryStatus`` (the node's C-STORE SCU).
        writer: ``writer(result, folder) -> {"sr": Path, "json": Path}`` (default :func:`write_result`).

    Example::

        >>> records, safe = SeriesHandler(screener, Path("out"), Path("undelivered"), None, node.send).process(batch)
    """

    def __init__(
        self,
        screener: Any,
        output_dir: Path | None,
        undelivered_dir: Path,
        destination: DicomPeer | Any | None,
        send: Callable[[Dataset, Any], DeliveryStatus],
        writer: Callable[[Any, Path], dict[str, Path]] | None = None,
    ) -> None:
        self.screener = screener
        self.output_dir = output_dir
        self.undelivered_dir = undelivered_dir
        self.destination = destination
        self.send = send
        self._writer = writer

    def _read_back(self, s: ReceivedSeries) -> None:
        """Reads a series' instances back from the spool (headers, pixel data deferred), sorting them into images,
        non-image objects and files that cannot be read."""
        for f in dict.fromkeys(s.files):
            try:
                ds = read_header(f)
            except ValueError as e:
                s.unreadable.append(str(e))
                continue
            if _is_image(ds):
                s.images.append(ds)
            else:
                s.skipped.append(sop_name(ds))

    def process(self, batch: list[ReceivedSeries]) -> tuple[list[NodeRecord], bool]:
        """Screens a batch, writes and sends the SRs.

        Returns:
            The records, and whether every result is safe (written or delivered): only then may the batch leave
            the spool.
        """
        by_key: dict[tuple[str, str], ReceivedSeries] = {}
        for s in batch:  # two batches of one series (e.g. resumed) are screened together
            self._read_back(s)
            key = (s.study_uid, s.series_uid)
            if key in by_key:
                first = by_key[key]
                first.images += s.images
                first.skipped += s.skipped
                first.unreadable += s.unreadable
                first.callers |= s.callers
                first.partial = first.partial or s.partial
            else:
                by_key[key] = s
        batch = list(by_key.values())
        records: list[NodeRecord] = []
        for s in batch:
            if s.unreadable:
                logger.error(
                    "series %s: %d received instance(s) cannot be read back: %s",
                    s.series_uid,
                    len(s.unreadable),
                    "; ".join(s.unreadable),
                )
                if not s.images and not s.skipped:
                    records.append(
                        NodeRecord(
                            s.study_uid, s.series_uid, ",".join(sorted(s.callers)), 0, 0, "failed",
                            "; ".join(s.unreadable), partial=s.partial,
                        )
                    )  # fmt: skip
            if s.skipped:
                kinds = ", ".join(f"{n} x {name}" for name, n in _count(s.skipped).items())
                logger.info(
                    "series %s: skipped %d non-image instance(s) (%s): not screened",
                    s.series_uid,
                    len(s.skipped),
                    kinds,
                )
                if not s.images:
                    records.append(
                        NodeRecord(
                            s.study_uid,
                            s.series_uid,
                            ",".join(sorted(s.callers)),
                            0,
                            len(s.skipped),
                            "skipped",
                            f"non-image SOP class: {kinds}",
                            partial=s.partial,
                        )
                    )
        images = [ds for s in batch for ds in s.images]
        if images:
            partial = [(s.study_uid, s.series_uid) for s in batch if s.partial]
            try:
                results = list(self.screener.screen_datasets(images, partial=partial))
            except Exception as e:
                logger.exception("screening failed for %d instance(s) of %d series", len(images), len(batch))
                results = []
                for s in batch:
                    if s.images:
                        records.append(
                            NodeRecord(
                                s.study_uid,
                                s.series_uid,
                                ",".join(sorted(s.callers)),
                                len(s.images),
                                len(s.skipped),
                                "failed",
                                f"screening raised {type(e).__name__}: {e}",
                                partial=s.partial,
                            )
                        )
            for r in results:
                records.append(self._handle_result(r, by_key))
        self._log_studies(batch, records)
        return records, all(self._safe(r) for r in records)

    def _safe(self, rec: NodeRecord) -> bool:
        """Whether a record's SR went where it must: written to ``output_dir`` when there is one, and delivered or
        kept on disk when there is a destination."""
        if getattr(rec.result, "sr", None) is None:
            return True
        if self.output_dir is not None and not rec.files:
            return False
        return self.destination is None or bool(rec.delivery and rec.delivery.ok) or bool(rec.files)

    def _handle_result(self, r: Any, by_key: dict[tuple[str, str], ReceivedSeries]) -> NodeRecord:
        s = by_key.get((str(r.study_uid), str(r.series_uid)))
        rec = NodeRecord(
            str(r.study_uid),
            str(r.series_uid),
            ",".join(sorted(s.callers)) if s else "?",
            len(s.images) if s else len(getattr(r, "predictions", []) or []),
            len(s.skipped) if s else 0,
            str(r.status),
            str(getattr(r, "reason", "") or ""),
            result=r,
            partial=bool(s and s.partial),
        )
        if rec.status == "screened":
            logger.info("series %s screened: %s", rec.series_uid, _verdicts(r))
        elif rec.status in ("skipped", "not screened"):
            logger.info("series %s skipped: %s", rec.series_uid, rec.reason or "no reason given")
        else:
            logger.error("series %s failed: %s", rec.series_uid, rec.reason or "no reason given")
        sr = getattr(r, "sr", None)
        if sr is None:
            return rec
        rec.sr_uid = str(getattr(sr, "SOPInstanceUID", "") or "") or None
        if self.output_dir is not None:
            rec.files = self._write(r, self.output_dir)
            logger.info("series %s: SR %s written to %s", rec.series_uid, rec.sr_uid, rec.files.get("sr"))
        if self.destination is not None:
            rec.delivery = self.send(sr, self.destination)
            if rec.delivery.ok:
                logger.info(
                    "series %s: SR %s sent to %s: %s",
                    rec.series_uid,
                    rec.sr_uid,
                    self.destination,
                    rec.delivery.message,
                )
            else:
                if not rec.files:
                    rec.files = self._write(r, self.undelivered_dir)
                logger.error(
                    "series %s: SR %s NOT delivered to %s: %s; kept at %s",
                    rec.series_uid,
                    rec.sr_uid,
                    self.destination,
                    rec.delivery.message,
                    rec.files.get("sr"),
                )
        return rec

    def _write(self, result: Any, folder: Path) -> dict[str, Path]:
        writer = self._writer
        if writer is None:
            writer = write_result
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return {k: Path(v) for k, v in writer(result, folder).items()}
        except Exception:
            logger.exception(
                "could not write the result of series %s to %s", getattr(result, "series_uid", "?"), folder
            )
            return {}

    def _log_studies(self, batch: list[ReceivedSeries], records: list[NodeRecord]) -> None:
        for study in sorted({s.study_uid for s in batch}):
            recs = [r for r in records if r.study_uid == study]
            if recs and not any(r.status == "screened" for r in recs):
                reasons = "; ".join(f"{r.series_uid}: {r.reason or r.status}" for r in recs)
                logger.warning(
                    "study %s: no series matched the screening rules (%d series: %s)", study, len(recs), reasons
                )


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _verdicts(result: Any) -> str:
    parts = []
    for p in getattr(result, "predictions", None) or []:
        cls = p.get("predicted_class", "?")
        prob = (p.get("probabilities") or {}).get(cls)
        guard = p.get("guard")
        if guard:
            g = "ADVERSARIAL SUSPECTED" if guard.get("adversarial_suspected") else "guard clear"
            g += (
                f" (score {guard.get('score', float('nan')):.3g}, threshold {guard.get('threshold', float('nan')):.3g})"
            )
        else:
            g = "no guard"
        where = p.get("sop_instance_uid", "?") + (f" frame {p['frame']}" if p.get("frame") else "")
        parts.append(f"{where}: {cls}" + (f" p={prob:.3f}" if isinstance(prob, (int, float)) else "") + f", {g}")
    return "; ".join(parts) if parts else "no per-image predictions"
