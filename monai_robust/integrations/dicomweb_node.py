# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOMweb for the DICOM node: deliver its SRs by STOW-RS (:class:`StowDestination`, a ``destination`` of
:class:`~monai_robust.integrations.dicom.DicomNode` beside ``"AE@host:port"``), and pull studies from a PACS by
QIDO-RS/WADO-RS into the node (:func:`pull_dicomweb`, the DICOMweb counterpart of ``DicomNode.request_move``).

A pulled study is C-STOREd to the node's own SCP in one association, so it gets every guarantee of a received study
(spooled and flushed before Success, screened after the association ends, resumed after a crash). An SR the STOW-RS
destination does not take is kept on disk as for C-STORE (``output_dir``, else ``undelivered_dir``).

Command line::

    python -m monai_robust.dicom serve --bundle bundles/robust_xray_classification --port 11112 \\
        --destination-dicomweb http://127.0.0.1:8042/dicom-web --output results/ \\
        --pull-dicomweb http://127.0.0.1:8042/dicom-web --study 1.2.3
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from monai_robust.integrations.dicom.node import DicomNode
from monai_robust.integrations.dicom.peer import DeliveryStatus
from monai_robust.integrations.dicomweb import DicomWebClient, StowError

__all__ = ["StowDestination", "pull_dicomweb"]

logger = logging.getLogger("monai_robust.integrations.dicom.node")  # the node's logger: one log for the node


class StowDestination:
    """Where a :class:`~monai_robust.integrations.dicom.DicomNode` sends its SRs by STOW-RS.

    Args:
        url: the DICOMweb root (e.g. Orthanc's ``http://host:8042/dicom-web``).
        timeout: seconds per HTTP request (> 0).
        attempts: tries per SR (>= 1; see :class:`~monai_robust.integrations.dicomweb.DicomWebClient`).

    Raises:
        ValueError: For a bad ``url``, ``timeout`` or ``attempts``.
        RuntimeError: When ``dicomweb-client`` is not installed.

    Example::

        >>> node = DicomNode(screener, destination=StowDestination("http://127.0.0.1:8042/dicom-web"))
    """

    def __init__(self, url: str, timeout: float = 30.0, attempts: int = 1) -> None:
        self.client = DicomWebClient(url, timeout=timeout, attempts=attempts)

    def __str__(self) -> str:
        return f"STOW-RS {self.client.url}"

    def deliver(self, dataset: Dataset) -> DeliveryStatus:
        """Stores one object by STOW-RS; never raises for network or server trouble.

        Returns:
            A :class:`~monai_robust.integrations.dicom.DeliveryStatus`: ``ok`` when the server listed the instance as
            stored; ``status`` is ``None`` (no DIMSE status); ``message`` has the server's reason otherwise.
        """
        uid = str(getattr(dataset, "SOPInstanceUID", "?"))
        try:
            stored = self.client.store([dataset])
        except StowError as e:
            return DeliveryStatus(False, None, str(e))
        except Exception as e:  # anything else from the HTTP stack: the SR must still be kept
            return DeliveryStatus(False, None, f"STOW-RS to {self.client.url} failed ({type(e).__name__}: {e})")
        if uid not in stored:
            return DeliveryStatus(False, None, f"STOW-RS to {self.client.url}: {uid} not among the stored {stored}")
        return DeliveryStatus(True, None, f"STOW-RS stored {uid} at {self.client.url}")


def _store_to_node(node: DicomNode, datasets: list[Dataset], calling_ae: str) -> DeliveryStatus:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.network_timeout
    contexts: dict[str, set[str]] = {}
    for ds in datasets:
        syntax = str(getattr(getattr(ds, "file_meta", Dataset()), "TransferSyntaxUID", ExplicitVRLittleEndian))
        contexts.setdefault(str(ds.SOPClassUID), set()).add(syntax)
    if len(contexts) > 128:
        return DeliveryStatus(False, None, f"{len(contexts)} SOP classes in one study: more than 128 contexts")
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    host = "127.0.0.1" if node.host in ("0.0.0.0", "::", "") else node.host
    assoc = ae.associate(host, int(node.port or 0), ae_title=node.ae_title)
    if not assoc.is_established:
        return DeliveryStatus(False, None, f"no association with the node {node.ae_title}@{host}:{node.port}")
    failed: list[str] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status or int(getattr(status, "Status", -1)) not in (0x0000, 0xB000, 0xB006, 0xB007):
                failed.append(str(getattr(ds, "SOPInstanceUID", "?")))
    finally:
        if assoc.is_established:
            assoc.release()
    if failed:
        return DeliveryStatus(False, None, f"the node refused {len(failed)} instance(s): {', '.join(failed)}")
    return DeliveryStatus(True, 0x0000, f"{len(datasets)} instance(s) stored in the node")


def pull_dicomweb(
    node: DicomNode,
    source: str | DicomWebClient,
    study_uids: Sequence[str] | None = None,
    filters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    calling_ae: str | None = None,
) -> dict[str, DeliveryStatus]:
    """Pulls studies by QIDO-RS/WADO-RS and C-STOREs each one into the running ``node`` (one association per study).

    Args:
        node: a started :class:`~monai_robust.integrations.dicom.DicomNode`.
        source: the PACS's DICOMweb root or a :class:`~monai_robust.integrations.dicomweb.DicomWebClient`.
        study_uids: studies to pull (default: every study with a series matching ``filters``).
        filters: QIDO-RS series filters, e.g. ``{"Modality": "CR"}``, or a list of them (one search each; a series
            found by several is pulled once).
        calling_ae: the AE title the instances come from (default: the node's own); it must pass the node's
            ``allowed_ae_titles``, and the node must accept loopback (or its own address).

    Returns:
        ``{study uid: DeliveryStatus}``: ``ok`` when every instance of the study was accepted by the node.

    Raises:
        RuntimeError: When the node is not running.
        requests.HTTPError / ConnectionError: When QIDO-RS or WADO-RS fails.

    Example::

        >>> pull_dicomweb(node, "http://127.0.0.1:8042/dicom-web", ["1.2.3"])["1.2.3"].ok
        True
    """
    if node.port is None:
        raise RuntimeError(f"DICOM node {node.ae_title} is not running: start() it before pull_dicomweb().")
    client = source if isinstance(source, DicomWebClient) else DicomWebClient(source)
    by_study: dict[str, dict[str, Any]] = {}
    for f in [filters] if filters is None or isinstance(filters, Mapping) else list(filters):
        for ref in client.search_series(study_uids, f):
            by_study.setdefault(ref.study_uid, {})[ref.series_uid] = ref
    out: dict[str, DeliveryStatus] = {}
    for study, series in by_study.items():
        refs = list(series.values())
        datasets = [ds for ref in refs for ds in client.retrieve_series(ref)]
        out[study] = _store_to_node(node, datasets, calling_ae or node.ae_title)
        (logger.info if out[study].ok else logger.error)(
            "DICOMweb pull of study %s from %s (%d series): %s", study, client.url, len(refs), out[study].message
        )
    return out
