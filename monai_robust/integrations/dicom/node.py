# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A DICOM network node: a storage SCP that receives images from a PACS or modality, screens each completed series
with a :class:`~monai_robust.integrations.dicom.DicomScreener` (the bundle's model and its adversarial-input guard)
and sends the resulting DICOM Structured Report to a destination AE (C-STORE as SCU), optionally also writing it
to a folder.

How it behaves, as a PACS administrator sees it (every step is logged through :mod:`logging`, logger
``monai_robust.integrations.dicom.node``):

- **Who may connect.** Associations are accepted only from allowed peer addresses (default: loopback) and, when
  ``allowed_ae_titles`` is given, from those calling AE titles, and only when they call this node's AE title. Anything
  else is rejected with an A-ASSOCIATE-RJ (permanent; "calling AE title not recognised", "called AE title not
  recognised" or "no reason given" for an address) and logged as a warning; the node keeps serving.
- **What it stores.** Every storage SOP class, in any transfer syntax. Instances are grouped by
  ``(StudyInstanceUID, SeriesInstanceUID)`` in memory. Objects that are not images (SEG, SR, PDF, presentation
  states, ...) are acknowledged, then logged as skipped; they are not screened.
- **When a series is complete.** When the association that delivered it ends (released or aborted), when
  ``complete_on_release`` is set, and/or when no instance of it arrived for ``series_timeout`` seconds (for peers
  that keep associations open). A series that keeps arriving later is screened again as a new batch.
- **Screening and results.** Completed series are screened on a worker thread, one batch per association (so a
  study is screened together and "no series of this study matched the rules" can be reported). Each verdict is
  logged. SRs go to ``destination`` by C-STORE; a refusal, an unreachable peer or a failure status is logged as an
  error with the status code, and the SR is kept on disk (``output_dir``, or ``undelivered_dir``).

Example::

    >>> from monai_robust.integrations.dicom import DicomScreener
    >>> node = DicomNode(DicomScreener("bundles/robust_xray_classification"), ae_title="MONAI_SCREEN", port=11112,
    ...                  destination="ORTHANC@127.0.0.1:4242", allowed_ae_titles=["ORTHANC"], output_dir="results")
    >>> with node:          # serving in background threads until the block ends
    ...     node.wait_for_records(1, timeout=60)
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_robust.integrations.dicom.peer import (
    DeliveryStatus,
    DicomPeer,
    send_c_store,
    sop_name,
    validate_ae_title,
    validate_port,
)
from monai_robust.integrations.dicom.results import write_result

__all__ = ["LOOPBACK", "DicomNode", "NodeRecord", "host_networks"]

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1")
_QUERY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE


@dataclass
class NodeRecord:
    """What the node did with one received series.

    Attributes:
        study_uid, series_uid: the series.
        calling_ae: AE title of the peer that sent it (``"a@b"`` joined when several did).
        n_instances: image instances received; ``n_skipped``: non-image instances (not screened).
        status: ``"screened"``, ``"skipped"`` or ``"failed"`` (as the screener's ``SeriesResult.status``).
        reason: why (from the screener, or the node's own reason: non-image SOP class, screening error).
        sr_uid: the SR's SOPInstanceUID, when one was made.
        delivery: the C-STORE outcome at the destination (``None`` when there is no destination or no SR).
        files: files written (``{"sr": path, "json": path}``), empty when none.
        result: the screener's ``SeriesResult`` (``None`` for series the node skipped itself).
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


@dataclass
class _Series:
    study_uid: str
    series_uid: str
    images: list[Dataset] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "SOP class name (uid)" of non-image instances
    callers: set[str] = field(default_factory=set)
    open_assocs: set[int] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)


def _is_image(ds: Dataset) -> bool:
    sop_class = UID(str(getattr(ds, "SOPClassUID", "")))
    return "Image Storage" in sop_class.name and (
        "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    )


def host_networks(hosts: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of allowed peers: IP addresses, networks (``"10.0.0.0/24"``) or resolvable host names.

    Raises:
        ValueError: For an empty entry or a name that does not resolve (quoted).
    """
    nets = []
    for h in hosts:
        if not isinstance(h, str) or not h.strip():
            raise ValueError(f"allowed_hosts entries must be host names, IP addresses or networks, got {h!r}.")
        try:
            nets.append(ipaddress.ip_network(h.strip(), strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(h.strip(), None)
        except OSError as e:
            raise ValueError(
                f"allowed host {h!r} is neither an IP address/network nor a resolvable name ({e})."
            ) from None
        nets.extend(ipaddress.ip_network(info[4][0].split("%")[0]) for info in infos)
    return nets


class DicomNode:
    """A DICOM storage SCP that screens each completed series and sends the SR on (see the module docstring).

    Args:
        screener: an object with ``screen_datasets(list[Dataset]) -> list[SeriesResult]``, normally a
            :class:`~monai_robust.integrations.dicom.DicomScreener`.
        ae_title: this node's AE title (peers must call it).
        host: address to listen on (default loopback only).
        port: TCP port to listen on; ``0`` picks a free one (read it back from :attr:`port` after :meth:`start`).
        destination: where SRs go, ``"AE@host:port"`` or a :class:`DicomPeer`; ``None``: only written to
            ``output_dir``.
        output_dir: folder where every result (SR + JSON sidecar) is written; ``None``: only undelivered ones are.
        undelivered_dir: folder for SRs the destination did not accept, when ``output_dir`` is ``None``
            (default: ``<system temp>/monai_robust_dicom_node/undelivered``; each path is logged).
        allowed_ae_titles: calling AE titles accepted; ``None`` accepts any valid AE title from an allowed host.
        allowed_hosts: peer addresses accepted: IP addresses, networks (``"10.0.0.0/24"``) or host names.
        complete_on_release: a series is complete when the association(s) that delivered it end.
        series_timeout: seconds without a new instance after which a series is complete; ``None`` to disable.
        network_timeout: seconds for ACSE/DIMSE/network timeouts of both the server and the SR sender.
        writer: ``writer(result, folder) -> {"sr": Path, "json": Path}``; default
            :func:`monai_robust.integrations.dicom.write_result`.

    Raises:
        ValueError: For an invalid AE title (own or allowed), port, destination, host entry, a screener without
            ``screen_datasets``, or when neither completion rule is enabled.

    Example::

        >>> node = DicomNode(screener, ae_title="MONAI_SCREEN", port=0, destination="PACS@127.0.0.1:4242").start()
        >>> node.port  # the port chosen
        40123
        >>> node.stop()
    """

    def __init__(
        self,
        screener: Any,
        ae_title: str = "MONAI_ROBUST",
        host: str = "127.0.0.1",
        port: int = 11112,
        destination: str | DicomPeer | None = None,
        output_dir: str | Path | None = None,
        undelivered_dir: str | Path | None = None,
        allowed_ae_titles: Sequence[str] | None = None,
        allowed_hosts: Sequence[str] = LOOPBACK,
        complete_on_release: bool = True,
        series_timeout: float | None = 30.0,
        network_timeout: float = 30.0,
        writer: Callable[[Any, Path], dict[str, Path]] | None = None,
    ) -> None:
        if not callable(getattr(screener, "screen_datasets", None)):
            raise ValueError(f"screener must have a screen_datasets(datasets) method, got {type(screener).__name__}.")
        self.screener = screener
        self.ae_title = validate_ae_title(ae_title, "node AE title")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be an address to listen on, got {host!r}.")
        self.host = host
        self._requested_port = validate_port(port, "port", allow_zero=True)
        self.destination = None if destination is None else DicomPeer.parse(destination)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.undelivered_dir = (
            Path(undelivered_dir)
            if undelivered_dir is not None
            else Path(tempfile.gettempdir()) / "monai_robust_dicom_node" / "undelivered"
        )
        if isinstance(allowed_ae_titles, str):
            allowed_ae_titles = [allowed_ae_titles]
        self.allowed_ae_titles = (
            None
            if allowed_ae_titles is None
            else frozenset(validate_ae_title(a, "allowed AE title") for a in allowed_ae_titles)
        )
        if isinstance(allowed_hosts, str):
            allowed_hosts = [allowed_hosts]
        self.allowed_hosts = tuple(allowed_hosts)
        self._allowed_nets = host_networks(self.allowed_hosts)
        if not self._allowed_nets:
            raise ValueError("allowed_hosts is empty: no peer could connect.")
        if series_timeout is not None and (
            isinstance(series_timeout, bool) or not isinstance(series_timeout, (int, float)) or series_timeout <= 0
        ):
            raise ValueError(f"series_timeout must be a positive number of seconds or None, got {series_timeout!r}.")
        if not complete_on_release and series_timeout is None:
            raise ValueError("complete_on_release=False and series_timeout=None: no series would ever be complete.")
        if isinstance(network_timeout, bool) or not isinstance(network_timeout, (int, float)) or network_timeout <= 0:
            raise ValueError(f"network_timeout must be a positive number of seconds, got {network_timeout!r}.")
        self.complete_on_release = bool(complete_on_release)
        self.series_timeout = None if series_timeout is None else float(series_timeout)
        self.network_timeout = float(network_timeout)
        self._writer = writer

        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], _Series] = {}
        self._assoc_series: dict[int, set[tuple[str, str]]] = {}
        self._assoc_count: dict[int, int] = {}
        self._records: list[NodeRecord] = []
        self._busy = 0  # batches queued or being screened
        self._queue: queue.Queue[list[_Series] | None] = queue.Queue()
        self._stop_event = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.port: int | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def _make_ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.network_timeout
        ae.maximum_associations = 10
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> DicomNode:
        """Starts listening (background threads) and the screening worker; returns ``self``.

        Raises:
            RuntimeError: When the node is already running or the port cannot be bound (quoted).
        """
        from pynetdicom import evt

        if self._server is not None:
            raise RuntimeError(f"DICOM node {self.ae_title} is already running on port {self.port}.")
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_C_ECHO, self._on_c_echo),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        self._stop_event.clear()
        try:
            self._server = self._make_ae().start_server(
                (self.host, self._requested_port), block=False, evt_handlers=handlers
            )
        except OSError as e:
            raise RuntimeError(
                f"DICOM node {self.ae_title} cannot listen on {self.host}:{self._requested_port}: {e}"
            ) from e
        self.port = int(self._server.server_address[1])
        self._threads = [threading.Thread(target=self._worker, name=f"dicom-node-{self.ae_title}-screen", daemon=True)]
        if self.series_timeout is not None:
            self._threads.append(
                threading.Thread(target=self._watch_timeouts, name=f"dicom-node-{self.ae_title}-timeouts", daemon=True)
            )
        for t in self._threads:
            t.start()
        logger.info(
            "DICOM node %s listening on %s:%d; allowed peers: AE titles %s, hosts %s; series complete on %s; "
            "SR destination %s; results folder %s",
            self.ae_title,
            self.host,
            self.port,
            "any" if self.allowed_ae_titles is None else sorted(self.allowed_ae_titles),
            list(self.allowed_hosts),
            " or ".join(
                (["association end"] if self.complete_on_release else [])
                + ([f"{self.series_timeout:g} s idle"] if self.series_timeout is not None else [])
            ),
            self.destination or "none",
            self.output_dir or "none",
        )
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stops listening, screens the series still pending, and waits for the worker (at most ``timeout`` s)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        open_assocs = list(server.active_associations)
        if open_assocs:
            logger.warning("DICOM node %s stopping: aborting %d open association(s)", self.ae_title, len(open_assocs))
            for assoc in open_assocs:
                assoc.abort()
        server.shutdown()
        self.flush(reason="node stopping")
        self._stop_event.set()
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        logger.info("DICOM node %s stopped", self.ae_title)

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def records(self) -> list[NodeRecord]:
        """What was done so far, one :class:`NodeRecord` per series, in order."""
        with self._lock:
            return list(self._records)

    @property
    def idle(self) -> bool:
        """``True`` when no series is pending and no batch is being screened."""
        with self._lock:
            return not self._pending and self._busy == 0

    def wait_for_records(self, count: int, timeout: float = 60.0, poll: float = 0.05) -> list[NodeRecord]:
        """Waits until at least ``count`` series were handled (screened or skipped, SR sent or kept).

        Raises:
            TimeoutError: After ``timeout`` seconds, saying how many there are.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.records
            if len(records) >= count:
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"DICOM node {self.ae_title}: {len(records)} series handled after {timeout} s, waited for {count}."
                )
            time.sleep(poll)

    def wait_idle(self, timeout: float = 60.0, poll: float = 0.05) -> list[NodeRecord]:
        """Waits until nothing is pending or being screened; returns :attr:`records`.

        Raises:
            TimeoutError: After ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self.idle:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"DICOM node {self.ae_title} still busy after {timeout} s.")
            time.sleep(poll)
        return self.records

    def flush(self, reason: str = "flushed") -> int:
        """Marks every pending series complete now; returns how many were queued for screening."""
        with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
            self._assoc_series.clear()
            self._assoc_count.clear()
            self._busy += bool(batch)
        return self._enqueue(batch, reason)

    # --- association handling (pynetdicom threads) -----------------------------------------------------------------
    def _host_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._allowed_nets)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        try:
            address, port = assoc.requestor.address, assoc.requestor.port
        except ValueError:
            address, port = "?", 0
        peer = f"{calling or '?'}@{address}:{port}"
        reason = None
        if not self._host_allowed(address):
            reason, diagnostic = f"address {address} is not in the allowed hosts {list(self.allowed_hosts)}", 0x01
        elif self.allowed_ae_titles is not None and calling not in self.allowed_ae_titles:
            reason, diagnostic = f"calling AE title {calling!r} is not in {sorted(self.allowed_ae_titles)}", 0x03
        elif called != self.ae_title:
            reason, diagnostic = f"it called AE title {called!r}, this node is {self.ae_title!r}", 0x07
        if reason is not None:
            logger.warning("association from %s rejected: %s", peer, reason)
            assoc.acse.send_reject(0x01, 0x01, diagnostic)
            # as pynetdicom does for its own rejections: wait until the A-ASSOCIATE-RJ is out and the peer has
            # closed (or ARTIM expired), so the socket is not shut down under the unsent PDU
            assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        req = event.assoc.requestor
        logger.info(
            "association from %s@%s:%s accepted (called %s)", req.ae_title, req.address, req.port, self.ae_title
        )

    def _on_c_echo(self, event: Any) -> int:
        logger.info("C-ECHO from %s@%s", event.assoc.requestor.ae_title, event.assoc.requestor.address)
        return 0x0000

    def _on_c_store(self, event: Any) -> int:
        caller = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as e:  # a dataset pydicom cannot decode: refuse it, keep serving
            logger.error("C-STORE from %s: the dataset cannot be decoded (%s); answered 0xC210", caller, e)
            return 0xC210
        study_uid = str(getattr(ds, "StudyInstanceUID", "") or "")
        series_uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        sop_uid = str(getattr(ds, "SOPInstanceUID", "") or "?")
        if not study_uid or not series_uid:
            logger.error(
                "C-STORE from %s: instance %s (%s) has no StudyInstanceUID/SeriesInstanceUID; answered 0xA900",
                caller,
                sop_uid,
                sop_name(ds),
            )
            return 0xA900
        key = (study_uid, series_uid)
        with self._lock:
            series = self._pending.get(key)
            if series is None:
                series = self._pending[key] = _Series(study_uid, series_uid)
            if _is_image(ds):
                series.images.append(ds)
            else:
                series.skipped.append(sop_name(ds))
            series.callers.add(event.assoc.requestor.ae_title)
            series.open_assocs.add(id(event.assoc))
            series.last_seen = time.monotonic()
            self._assoc_series.setdefault(id(event.assoc), set()).add(key)
            self._assoc_count[id(event.assoc)] = self._assoc_count.get(id(event.assoc), 0) + 1
            n = len(series.images) + len(series.skipped)
        logger.debug("C-STORE from %s: %s %s, series %s (%d so far)", caller, sop_name(ds), sop_uid, series_uid, n)
        return 0x0000

    def _on_conn_close(self, event: Any) -> None:
        assoc = event.assoc
        with self._lock:
            keys = self._assoc_series.pop(id(assoc), set())
            received = self._assoc_count.pop(id(assoc), 0)
            done = []
            for key in keys:
                series = self._pending.get(key)
                if series is None:
                    continue
                series.open_assocs.discard(id(assoc))
                if self.complete_on_release and not series.open_assocs:
                    done.append(self._pending.pop(key))
            self._busy += bool(done)
        if assoc.is_rejected or not (assoc.is_released or assoc.is_aborted or received):
            return  # a rejected association (already logged) or a bare connection
        how = "released" if assoc.is_released else "aborted" if assoc.is_aborted else "closed without release"
        (logger.info if assoc.is_released else logger.warning)(
            "association from %s@%s %s: %d instance(s) received in %d series%s",
            assoc.requestor.ae_title,
            assoc.requestor.address,
            how,
            received,
            len(keys),
            " (kept open until their idle timeout or other associations end)" if len(done) < len(keys) else "",
        )
        self._enqueue(done, f"association {how}")

    def _watch_timeouts(self) -> None:
        assert self.series_timeout is not None
        interval = min(1.0, self.series_timeout / 4)
        while not self._stop_event.wait(interval):
            now = time.monotonic()
            with self._lock:
                expired = [k for k, s in self._pending.items() if now - s.last_seen >= self.series_timeout]
                batch = [self._pending.pop(k) for k in expired]
                self._busy += bool(batch)
                for keys in self._assoc_series.values():
                    keys.difference_update(expired)
            self._enqueue(batch, f"no new instance for {self.series_timeout:g} s")

    def _enqueue(self, batch: list[_Series], why: str) -> int:
        if not batch:
            return 0
        for s in batch:
            logger.info(
                "series %s (study %s) from %s complete (%s): %d image instance(s)%s",
                s.series_uid,
                s.study_uid,
                ",".join(sorted(s.callers)),
                why,
                len(s.images),
                f", {len(s.skipped)} non-image instance(s)" if s.skipped else "",
            )
        self._queue.put(batch)  # the caller counted it in _busy when it took the series off _pending
        return len(batch)

    # --- screening and delivery (worker thread) -----------------------------------------------------------------
    def _worker(self) -> None:
        stopping = False
        while True:
            try:  # after the stop sentinel, drain what association threads queued meanwhile, then end
                batch = self._queue.get(timeout=0.1) if stopping else self._queue.get()
            except queue.Empty:
                return
            if batch is None:
                stopping = True
                continue
            try:
                self._process(batch)
            except Exception:  # never let one batch stop the node
                logger.exception(
                    "DICOM node %s: unexpected error while handling a batch of %d series", self.ae_title, len(batch)
                )
            finally:
                with self._lock:
                    self._busy -= 1

    def _process(self, batch: list[_Series]) -> None:
        by_key = {(s.study_uid, s.series_uid): s for s in batch}
        records: list[NodeRecord] = []
        for s in batch:
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
                        )
                    )
        images = [ds for s in batch for ds in s.images]
        if images:
            try:
                results = list(self.screener.screen_datasets(images))
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
                            )
                        )
            for r in results:
                records.append(self._handle_result(r, by_key))
        self._log_studies(batch, records)
        with self._lock:
            self._records.extend(records)

    def _handle_result(self, r: Any, by_key: dict[tuple[str, str], _Series]) -> NodeRecord:
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
        )
        if rec.status == "screened":
            logger.info("series %s screened: %s", rec.series_uid, _verdicts(r))
        elif rec.status == "skipped":
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
            rec.delivery = self.send(sr)
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

    def _log_studies(self, batch: list[_Series], records: list[NodeRecord]) -> None:
        for study in sorted({s.study_uid for s in batch}):
            recs = [r for r in records if r.study_uid == study]
            if recs and not any(r.status == "screened" for r in recs):
                reasons = "; ".join(f"{r.series_uid}: {r.reason or r.status}" for r in recs)
                logger.warning(
                    "study %s: no series matched the screening rules (%d series: %s)", study, len(recs), reasons
                )

    def send(self, dataset: Dataset, destination: str | DicomPeer | None = None) -> DeliveryStatus:
        """Sends one object (an SR) by C-STORE with this node's AE title; never raises for network trouble.

        Args:
            dataset: the object.
            destination: the peer (default: :attr:`destination`).

        Returns:
            A :class:`~monai_robust.integrations.dicom.peer.DeliveryStatus`.

        Raises:
            ValueError: When there is no destination at all.
        """
        peer = self.destination if destination is None else DicomPeer.parse(destination)
        if peer is None:
            raise ValueError(f"DICOM node {self.ae_title}: no destination configured to send to.")
        return send_c_store(dataset, peer, self.ae_title, self.network_timeout)

    def request_move(self, source: str | DicomPeer, study_uid: str) -> DeliveryStatus:
        """Pulls a study: asks ``source`` (a PACS that knows this node as a modality) to C-MOVE it to this node.

        The instances arrive on the node's own SCP and are screened as usual; this waits for the C-MOVE to finish.

        Args:
            source: the PACS, ``"AE@host:port"``.
            study_uid: StudyInstanceUID to retrieve.

        Returns:
            A :class:`DeliveryStatus` with the final C-MOVE status (``ok`` when it is success or warning).

        Raises:
            RuntimeError: When the node is not running (it must receive the instances).
        """
        from pynetdicom import AE

        if self._server is None:
            raise RuntimeError(f"DICOM node {self.ae_title} is not running: start() it before request_move().")
        peer = DicomPeer.parse(source)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.network_timeout
        ae.add_requested_context(_QUERY_MOVE)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            return DeliveryStatus(False, None, f"C-MOVE: no association with {peer}")
        last: int | None = None
        try:
            for status, _ in assoc.send_c_move(query, self.ae_title, _QUERY_MOVE):
                if status and "Status" in status:
                    last = int(status.Status)
        finally:
            if assoc.is_established:
                assoc.release()
        ok = last is not None and last in (0x0000, 0xB000)
        logger.info(
            "C-MOVE of study %s from %s to %s: status %s",
            study_uid,
            peer,
            self.ae_title,
            "none" if last is None else f"0x{last:04X}",
        )
        return DeliveryStatus(ok, last, "C-MOVE status " + ("none" if last is None else f"0x{last:04X}"))


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
