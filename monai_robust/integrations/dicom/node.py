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
- **What it stores, and when it says Success.** Every storage SOP class, in any transfer syntax. Each instance is
  written to the spool (:class:`~monai_robust.integrations.dicom.spool.Spool`: the bytes as received, ``fsync`` of
  the file and its folder) *before* the C-STORE is answered with Success; a disk that refuses gets 0xA700 (out of
  resources), a dataset that cannot be decoded 0xC210, one without Study/Series Instance UID 0xA900. Instances are
  grouped by ``(StudyInstanceUID, SeriesInstanceUID)``. Objects that are not images (SEG, SR, PDF, presentation
  states, ...) are logged as skipped; they are not screened. At most ``max_associations`` associations are served
  at once; more are rejected ("local limit exceeded").
- **After a crash or a kill.** On :meth:`DicomNode.start`, every batch still in the spool is screened first: a
  series whose completion was recorded as complete, any other as *partial* (status and SR CompletionFlag
  ``PARTIAL``). A batch leaves the spool only after its result was written or sent, so an acknowledged instance is
  screened at least once (twice when the node dies between writing a result and clearing the spool: the second
  result is a new version, nothing is overwritten).
- **When a series is complete.** When the association that delivered it ends (released or aborted), when
  ``complete_on_release`` is set, and/or when no instance of it arrived for ``series_timeout`` seconds (for peers
  that keep associations open). A series whose association was aborted, or still open when the node stops, is
  screened as *partial*. A series that keeps arriving later is screened again as a new batch, and its result is
  written as a new version next to the first.
- **Screening and results.** Completed series are screened on a worker thread, one batch per association (so a
  study is screened together and "no series of this study matched the rules" can be reported). Each verdict is
  logged. SRs go to ``destination`` by C-STORE (or STOW-RS: ``dicomweb_node.StowDestination``); a refusal, an
  unreachable peer or a failure status is logged as an error with the reason, and the SR is kept on disk
  (``output_dir``, or ``undelivered_dir``).

Example::

    >>> from monai_robust.integrations.dicom import DicomScreener
    >>> node = DicomNode(DicomScreener("bundles/robust_xray_classification"), ae_title="MONAI_SCREEN", port=11112,
    ...                  destination="ORTHANC@127.0.0.1:4242", allowed_ae_titles=["ORTHANC"], output_dir="results")
    >>> with node:          # serving in background threads until the block ends
    ...     node.wait_for_records(1, timeout=60)
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from monai_robust.integrations.dicom.dispatch import NodeRecord, ReceivedSeries, SeriesHandler
from monai_robust.integrations.dicom.peer import (
    DeliveryStatus,
    DicomPeer,
    host_allowed,
    host_networks,
    request_c_move,
    send_c_store,
    sop_name,
    validate_ae_title,
    validate_port,
)
from monai_robust.integrations.dicom.spool import Spool

__all__ = ["LOOPBACK", "DicomNode", "NodeRecord"]

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1")


class DicomNode:
    """A DICOM storage SCP that screens each completed series and sends the SR on (see the module docstring).

    Args:
        screener: an object with ``screen_datasets(list[Dataset]) -> list[SeriesResult]``, normally a
            :class:`~monai_robust.integrations.dicom.DicomScreener`.
        ae_title: this node's AE title (peers must call it).
        host: address to listen on (default loopback only).
        port: TCP port to listen on; ``0`` picks a free one (read it back from :attr:`port` after :meth:`start`).
        destination: where SRs go, ``"AE@host:port"``, a :class:`DicomPeer`, or an object with
            ``deliver(dataset) -> DeliveryStatus`` (e.g. :class:`~monai_robust.integrations.dicomweb_node.StowDestination`,
            STOW-RS); ``None``: only written to ``output_dir``.
        output_dir: folder where every result (SR + JSON sidecar) is written; ``None``: only undelivered ones are.
        undelivered_dir: folder for SRs the destination did not accept, when ``output_dir`` is ``None``
            (default: ``<system temp>/monai_robust_dicom_node/undelivered``; each path is logged).
        allowed_ae_titles: calling AE titles accepted; ``None`` accepts any valid AE title from an allowed host.
        allowed_hosts: peer addresses accepted: IP addresses, networks (``"10.0.0.0/24"``) or host names.
        complete_on_release: a series is complete when the association(s) that delivered it end.
        series_timeout: seconds without a new instance after which a series is complete; ``None`` to disable.
        network_timeout: seconds for ACSE/DIMSE/network timeouts of both the server and the SR sender.
        spool_dir: folder where received instances wait until screened (default: ``<output_dir>/.spool``, else
            ``<undelivered_dir>/.spool`` when given, else a new temporary folder, logged); use the same folder after
            a restart to resume.
        max_associations: associations served at once (pynetdicom's ``maximum_associations``); more are rejected
            with "local limit exceeded".
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
        spool_dir: str | Path | None = None,
        max_associations: int = 10,
    ) -> None:
        if not callable(getattr(screener, "screen_datasets", None)):
            raise ValueError(f"screener must have a screen_datasets(datasets) method, got {type(screener).__name__}.")
        self.screener = screener
        self.ae_title = validate_ae_title(ae_title, "node AE title")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be an address to listen on, got {host!r}.")
        self.host = host
        self._requested_port = validate_port(port, "port", allow_zero=True)
        self.destination = (
            destination if destination is None or hasattr(destination, "deliver") else DicomPeer.parse(destination)
        )
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
        self._handler = SeriesHandler(
            screener, self.output_dir, self.undelivered_dir, self.destination, self.send, writer=writer
        )
        if isinstance(max_associations, bool) or not isinstance(max_associations, int) or max_associations < 1:
            raise ValueError(f"max_associations must be a positive integer, got {max_associations!r}.")
        self.max_associations = max_associations
        if spool_dir is None and (output_dir is not None or undelivered_dir is not None):
            spool_dir = Path(output_dir if output_dir is not None else undelivered_dir) / ".spool"
        elif spool_dir is None:
            spool_dir = tempfile.mkdtemp(prefix=f"monai_robust_spool_{self.ae_title}_")
            logger.warning(
                "DICOM node %s: spool in the new folder %s; pass spool_dir to resume after a restart",
                self.ae_title,
                spool_dir,
            )
        self.spool = Spool(spool_dir)

        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], ReceivedSeries] = {}
        self._assoc_series: dict[int, set[tuple[str, str]]] = {}
        self._assoc_count: dict[int, int] = {}
        self._records: list[NodeRecord] = []
        self._busy = 0  # batches queued or being screened
        self._queue: queue.Queue[list[ReceivedSeries] | None] = queue.Queue()
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
        ae.maximum_associations = self.max_associations
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
        self._resume()
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
            "SR destination %s; results folder %s; spool %s; at most %d associations",
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
            self.spool.folder,
            self.max_associations,
        )
        return self

    def _resume(self) -> None:
        """Queues what a previous run received but did not finish screening (see the module docstring)."""
        batch = []
        for spooled in self.spool.pending():
            s = ReceivedSeries(spooled.study_uid, spooled.series_uid, spooled.folder, list(spooled.files))
            s.callers.update(spooled.callers)
            s.partial = not spooled.complete
            batch.append(s)
        if batch:
            n = sum(len(s.files) for s in batch)
            logger.warning(
                "DICOM node %s: resuming %d series (%d instance(s)) received before a stop or crash; %d partial",
                self.ae_title,
                len(batch),
                n,
                sum(s.partial for s in batch),
            )
            with self._lock:
                self._busy += 1
            self._enqueue(batch, "resumed from the spool")

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
        self.flush(reason="node stopping", open_as_partial=True)
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

    def flush(self, reason: str = "flushed", open_as_partial: bool = False) -> int:
        """Marks every pending series complete now (or, with ``open_as_partial``, those still receiving as
        partial); returns how many were queued for screening."""
        with self._lock:
            batch = list(self._pending.values())
            for s in batch:
                s.partial = s.partial or (open_as_partial and bool(s.open_assocs))
                if not s.partial:
                    self.spool.mark_complete(s.folder)
            self._pending.clear()
            self._assoc_series.clear()
            self._assoc_count.clear()
            self._busy += bool(batch)
        return self._enqueue(batch, reason)

    # --- association handling (pynetdicom threads) -----------------------------------------------------------------
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
        if not host_allowed(address, self._allowed_nets):
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
            study_uid = str(getattr(ds, "StudyInstanceUID", "") or "")
            series_uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
            sop_uid = str(getattr(ds, "SOPInstanceUID", "") or "?")
        except Exception as e:  # a dataset pydicom cannot decode (e.g. an unknown VR): refuse it, keep serving
            logger.error(
                "C-STORE from %s: the dataset cannot be decoded (%s: %s); answered 0xC210", caller, type(e).__name__, e
            )
            return 0xC210
        if not study_uid or not series_uid:
            logger.error(
                "C-STORE from %s: instance %s (%s) has no StudyInstanceUID/SeriesInstanceUID; answered 0xA900",
                caller,
                sop_uid,
                sop_name(ds),
            )
            return 0xA900
        key = (study_uid, series_uid)
        with self._lock:  # the spool write is inside the lock: a series is never completed under a pending write
            series = self._pending.get(key)
            try:
                if series is None:
                    folder = self.spool.open_series(study_uid, series_uid, str(event.assoc.requestor.ae_title))
                    series = self._pending[key] = ReceivedSeries(study_uid, series_uid, folder)
                series.files.append(self.spool.put(series.folder, event.encoded_dataset(), sop_uid))
            except OSError as e:
                logger.error("C-STORE from %s: instance %s cannot be spooled (%s); answered 0xA700", caller, sop_uid, e)
                return 0xA700
            series.callers.add(event.assoc.requestor.ae_title)
            series.open_assocs.add(id(event.assoc))
            series.last_seen = time.monotonic()
            self._assoc_series.setdefault(id(event.assoc), set()).add(key)
            self._assoc_count[id(event.assoc)] = self._assoc_count.get(id(event.assoc), 0) + 1
            n = len(series.files)
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
                series.partial = series.partial or not assoc.is_released
                if self.complete_on_release and not series.open_assocs:
                    done.append(self._pending.pop(key))
                    if not series.partial:
                        self.spool.mark_complete(series.folder)
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
                for s in batch:
                    if not s.partial:
                        self.spool.mark_complete(s.folder)
                self._busy += bool(batch)
                for keys in self._assoc_series.values():
                    keys.difference_update(expired)
            self._enqueue(batch, f"no new instance for {self.series_timeout:g} s")

    def _enqueue(self, batch: list[ReceivedSeries], why: str) -> int:
        if not batch:
            return 0
        for s in batch:
            (logger.warning if s.partial else logger.info)(
                "series %s (study %s) from %s %s (%s): %d instance(s) in the spool",
                s.series_uid,
                s.study_uid,
                ",".join(sorted(s.callers)),
                "cut off, screened as PARTIAL" if s.partial else "complete",
                why,
                len(s.files),
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
                records, safe = self._handler.process(batch)
                with self._lock:
                    self._records.extend(records)
                if safe:  # every result written or sent: the instances may leave the spool
                    for s in batch:
                        self.spool.remove(s.folder)
                else:
                    logger.error(
                        "a result of this batch could not be written or sent: its %d series stay in the spool %s "
                        "and are screened again on the next start",
                        len(batch),
                        self.spool.folder,
                    )
            except Exception:  # never let one batch stop the node; its instances stay in the spool for a restart
                logger.exception(
                    "DICOM node %s: unexpected error while handling a batch of %d series; their instances stay in "
                    "the spool %s",
                    self.ae_title,
                    len(batch),
                    self.spool.folder,
                )
            finally:
                with self._lock:
                    self._busy -= 1

    def send(self, dataset: Dataset, destination: Any = None) -> DeliveryStatus:
        """Sends one object (an SR) by C-STORE with this node's AE title (or by the destination's own ``deliver``,
        e.g. STOW-RS); never raises for network trouble.

        Args:
            dataset: the object.
            destination: the peer or an object with ``deliver`` (default: :attr:`destination`).

        Returns:
            A :class:`~monai_robust.integrations.dicom.peer.DeliveryStatus`.

        Raises:
            ValueError: When there is no destination at all.
        """
        peer = self.destination if destination is None else destination
        if peer is None:
            raise ValueError(f"DICOM node {self.ae_title}: no destination configured to send to.")
        if hasattr(peer, "deliver"):
            return peer.deliver(dataset)
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
        if self._server is None:
            raise RuntimeError(f"DICOM node {self.ae_title} is not running: start() it before request_move().")
        return request_c_move(source, study_uid, self.ae_title, self.network_timeout)
