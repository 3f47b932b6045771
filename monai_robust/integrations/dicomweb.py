# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOMweb in and out for screening: QIDO-RS search and WADO-RS retrieve of series from a PACS (in memory or into a
folder), and STOW-RS delivery of the Structured Reports, through ``dicomweb-client`` (the client MONAI Label uses).

The flow of :func:`screen_dicomweb`: QIDO-RS lists the series (optionally of given studies and matching QIDO filters,
e.g. ``{"Modality": "CR"}``); WADO-RS retrieves each series' instances; the screener screens them as datasets
received over the network (:meth:`~monai_robust.integrations.dicom.DicomScreener.screen_datasets`); with ``stow`` the
SRs are stored back by STOW-RS, and a rejected SR is reported with the server's reason, not dropped.

``dicomweb-client`` is optional (the ``dicom`` extra installs it): this module imports without it, and building a
:class:`DicomWebClient` raises a clear error.

Command line: ``screen`` reads from a PACS with ``--dicomweb`` (:func:`screen_from_dicomweb`)::

    python -m monai_robust.dicom screen --bundle bundles/robust_xray_classification \\
        --dicomweb http://127.0.0.1:8042/dicom-web --output results/ --modality CR DX --stow
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from monai.utils import optional_import
from pydicom import Dataset

from monai_robust.integrations.dicom.workflow import SUMMARY_NAME, screen

_DICOMwebClient, has_dicomweb_client = optional_import("dicomweb_client", name="DICOMwebClient")

__all__ = ["DicomWebClient", "SeriesRef", "StowError", "screen_dicomweb", "screen_from_dicomweb", "store_summary_srs"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "dicomweb-client is not importable: `pip install dicomweb-client` (or the project's `dicom` extra)."
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class StowError(RuntimeError):
    """A STOW-RS request failed or the server rejected instances (the message names them and the reason)."""


@dataclass(frozen=True)
class SeriesRef:
    """One series found by QIDO-RS.

    Attributes:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        modality: Modality (``""`` when the server did not return it).
        num_instances: NumberOfSeriesRelatedInstances (``None`` when not returned).
    """

    study_uid: str
    series_uid: str
    modality: str = ""
    num_instances: int | None = None


def _value(attrs: Mapping[str, Any], tag: str) -> Any:
    values = attrs.get(tag, {}).get("Value") or [None]
    return values[0]


def _check_uid(uid: Any, what: str) -> str:
    if not isinstance(uid, str) or not _UID.match(uid) or len(uid) > 64:
        raise ValueError(f"{what} must be a DICOM UID (digits and dots, <= 64 characters), got {uid!r}.")
    return uid


class DicomWebClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb root (e.g. Orthanc's ``http://host:8042/dicom-web``).

    Args:
        url: the DICOMweb root, ``http://`` or ``https://``.
        timeout: seconds per HTTP request (> 0).
        session: a ``requests.Session`` carrying authentication (``dicomweb_client.session_utils``), or ``None``.
        attempts: tries per request (>= 1; ``dicomweb-client`` waits exponentially between them, 1 s, 2 s, 4 s ...,
            after a refused connection or a 408/429/503/504 answer); 1: fail at once.

    Raises:
        RuntimeError: When ``dicomweb-client`` is not installed.
        ValueError: When ``url`` is not an http(s) URL, ``timeout`` is not positive or ``attempts`` < 1.

    Example::

        >>> client = DicomWebClient("http://127.0.0.1:8042/dicom-web")
        >>> refs = client.search_series(filters={"Modality": "CR"})
        >>> datasets = client.retrieve_series(refs[0])
    """

    def __init__(self, url: str, timeout: float = 30.0, session: Any = None, attempts: int = 3) -> None:
        if not has_dicomweb_client:
            raise RuntimeError(INSTALL_HINT)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be a DICOMweb root starting with http:// or https://, got {url!r}.")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got timeout={timeout!r}.")
        if not (isinstance(attempts, int) and attempts >= 1):
            raise ValueError(f"attempts must be an integer >= 1, got attempts={attempts!r}.")
        self.url = url.rstrip("/")
        self.client = _DICOMwebClient(url=self.url, session=session, timeout=float(timeout))
        self.client.set_http_retry_params(retry=attempts > 1, max_attempts=attempts)

    def search_series(
        self, study_uids: Sequence[str] | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[SeriesRef]:
        """QIDO-RS: the series of ``study_uids`` (default: every study) matching ``filters``.

        Args:
            study_uids: StudyInstanceUIDs to search in, or ``None`` for all.
            filters: QIDO-RS attribute filters by keyword, e.g. ``{"Modality": "CR"}``.

        Returns:
            The series found, in the server's order.

        Raises:
            ValueError: When a study UID is not a UID.
            requests.HTTPError: When the server answers with an error status.
        """
        fields = ["Modality", "NumberOfSeriesRelatedInstances"]
        found: list[SeriesRef] = []
        for study in [None] if study_uids is None else [_check_uid(u, "study uid") for u in study_uids]:
            hits = self.client.search_for_series(
                study_instance_uid=study, search_filters=dict(filters or {}), fields=fields, get_remaining=True
            )
            for attrs in hits:
                count = _value(attrs, "00201209")
                found.append(
                    SeriesRef(
                        study_uid=str(_value(attrs, "0020000D")),
                        series_uid=str(_value(attrs, "0020000E")),
                        modality=str(_value(attrs, "00080060") or ""),
                        num_instances=int(count) if count is not None else None,
                    )
                )
        return found

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        """WADO-RS: every instance of one series, as pydicom datasets (pixel data included), in the transfer syntax
        the server stores them in (``transfer-syntax=*``: no transcoding, e.g. JPEG 2000 stays JPEG 2000)."""
        return list(self.client.retrieve_series(ref.study_uid, ref.series_uid, media_types=(("application/dicom", "*"),)))

    def retrieve_to_folder(
        self,
        folder: str | os.PathLike,
        study_uids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Path]:
        """QIDO-RS then WADO-RS into ``folder/<study uid>/<series uid>/<sop instance uid>.dcm``.

        Args:
            folder: where to write (created if needed); an existing file of the same name is not overwritten.
            study_uids: as in :meth:`search_series`.
            filters: as in :meth:`search_series`.

        Returns:
            The series folders written, one per series found.

        Raises:
            FileExistsError: When a file to write already exists (names it).
            ValueError: When ``folder`` exists and is not a folder.
        """
        root = Path(folder)
        if root.exists() and not root.is_dir():
            raise ValueError(f"folder={str(root)!r} exists and is not a folder.")
        written = []
        for ref in self.search_series(study_uids, filters):
            target = root / _check_uid(ref.study_uid, "StudyInstanceUID") / _check_uid(ref.series_uid, "SeriesInstanceUID")
            target.mkdir(parents=True, exist_ok=True)
            for ds in self.retrieve_series(ref):
                path = target / f"{_check_uid(str(ds.SOPInstanceUID), 'SOPInstanceUID')}.dcm"
                if path.exists():
                    raise FileExistsError(f"{path} exists: retrieve into an empty folder.")
                ds.save_as(path, enforce_file_format=True)
            written.append(target)
        return written

    def store(self, datasets: Iterable[Dataset]) -> list[str]:
        """STOW-RS: stores datasets (e.g. the SRs); returns the SOPInstanceUIDs the server accepted.

        Raises:
            StowError: When the request fails or the server lists failed instances (with their failure reasons).
        """
        datasets = list(datasets)
        if not datasets:
            return []
        try:
            response = self.client.store_instances(datasets)
        except Exception as e:  # requests.HTTPError and connection errors, with the server's answer
            raise StowError(f"STOW-RS to {self.url} failed for {len(datasets)} instance(s): {e}") from e
        failed = [
            f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
            for item in getattr(response, "FailedSOPSequence", [])
        ]
        if failed:
            raise StowError(f"STOW-RS to {self.url} rejected {len(failed)} instance(s): {', '.join(failed)}.")
        return [str(item.ReferencedSOPInstanceUID) for item in getattr(response, "ReferencedSOPSequence", [])]


def screen_dicomweb(
    screener: Any,
    client: DicomWebClient,
    study_uids: Sequence[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    stow: DicomWebClient | None = None,
) -> list[tuple[Any, list[str] | str | None]]:
    """Screens series fetched by QIDO-RS/WADO-RS and, with ``stow``, stores each SR back by STOW-RS.

    Args:
        screener: a :class:`~monai_robust.integrations.dicom.DicomScreener` (anything with ``screen_datasets``).
        client: where the studies come from.
        study_uids: studies to screen (default: every study the filters match).
        filters: QIDO-RS filters, e.g. ``{"Modality": "CR"}``.
        stow: where SRs go (often ``client`` itself), or ``None`` to keep them in the results only.

    Returns:
        ``[(result, delivery)]`` per series: ``delivery`` is the list of stored SOPInstanceUIDs, the error message of
        a failed STOW-RS (the screening result is kept), or ``None`` (no ``stow``, or no SR).

    Example::

        >>> pacs = DicomWebClient("http://127.0.0.1:8042/dicom-web")
        >>> for result, delivery in screen_dicomweb(screener, pacs, filters={"Modality": "CR"}, stow=pacs):
        ...     print(result.series_uid, result.status, delivery)
    """
    if not hasattr(screener, "screen_datasets"):
        raise ValueError(f"screener must have screen_datasets (a DicomScreener), got {type(screener).__name__}.")
    out: list[tuple[Any, list[str] | str | None]] = []
    for ref in client.search_series(study_uids, filters):
        for result in screener.screen_datasets(client.retrieve_series(ref)):
            delivery: list[str] | str | None = None
            if stow is not None and result.sr is not None:
                try:
                    delivery = stow.store([result.sr])
                except StowError as e:
                    logger.error(str(e))
                    delivery = str(e)
            out.append((result, delivery))
    return out


def screen_from_dicomweb(
    bundle: Any,
    url: str,
    output: str | os.PathLike,
    *,
    study_uids: Sequence[str] | None = None,
    modalities: Sequence[str] | None = ("CR", "DX"),
    stow_url: str | None = None,
    attempts: int = 3,
    echo: bool = False,
    **screen_kwargs: Any,
) -> dict[str, Any]:
    """``screen`` of a PACS's series: QIDO-RS / WADO-RS into a temporary folder, then
    :func:`~monai_robust.integrations.dicom.workflow.screen` (with all its guarantees: safe names, versions, one result
    per series, the summary), then, with ``stow_url``, STOW-RS of every SR written. This is
    ``python -m monai_robust.dicom screen --dicomweb URL [--stow | --stow-url URL]``.

    Args:
        bundle: a bundle folder or a ready ``DicomScreener``.
        url: the DICOMweb root to read from.
        output: the results folder.
        study_uids: studies to screen (default: every study with series of ``modalities``).
        modalities: QIDO-RS ``Modality`` filters, one search each (``None``: every series).
        stow_url: where SRs are stored by STOW-RS (often ``url``), or ``None``.
        attempts: tries per HTTP request.
        echo: print one line per series (and per STOW-RS failure).
        screen_kwargs: ``rules``, ``bundle_root``, ``ckpt_file``, ``device``, ``overrides``, ``batch_size``.

    Returns:
        ``screen``'s summary with ``inputs == [url]`` and, per result, ``stow``: the stored SOPInstanceUIDs or the
        error; a failed STOW-RS makes ``exit_code`` 1 (the SR stays in ``output``). Rewritten to
        ``<output>/screening_summary.json``; the results' ``sources`` name the temporary files, removed afterwards.

    Raises:
        requests.HTTPError / ConnectionError: When QIDO-RS or WADO-RS fails (nothing is screened).
    """
    source = DicomWebClient(url, attempts=attempts)
    stow = DicomWebClient(stow_url, attempts=attempts) if stow_url else None
    with tempfile.TemporaryDirectory(prefix="monai_robust_dicomweb_") as tmp:
        for modality in modalities or [None]:
            source.retrieve_to_folder(tmp, study_uids, {"Modality": modality} if modality else None)
        summary = screen(bundle, [tmp], output, echo=echo, **screen_kwargs)
    summary["inputs"] = [url]
    if stow is not None:
        store_summary_srs(summary, stow, echo=echo)
    (Path(output) / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def store_summary_srs(summary: dict[str, Any], client: DicomWebClient, echo: bool = False) -> None:
    """STOW-RS of every SR a ``screen`` summary lists (``results[i]["files"]["sr"]``); records ``stow`` per result
    (stored SOPInstanceUIDs or the error) and sets ``exit_code`` to 1 when one fails (the SR file stays).

    Example::

        >>> store_summary_srs(screen("bundles/robust_xray_classification", ["in/"], "out/"), DicomWebClient(url))
    """
    for record in summary.get("results", []):
        sr_path = record.get("files", {}).get("sr")
        if not sr_path:
            continue
        try:
            record["stow"] = client.store([pydicom.dcmread(sr_path)])
        except StowError as e:
            record["stow"], summary["exit_code"] = str(e), 1
            logger.error(str(e))
            if echo:
                print(f"{'undelivered':12s} {record['series_instance_uid']}: {e}")
