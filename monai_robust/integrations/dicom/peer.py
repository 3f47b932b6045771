# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""DICOM peers: AE title checks, ``AE@host:port`` addresses, and sending one object by C-STORE."""

from __future__ import annotations

import ipaddress
import logging
import socket
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "DeliveryStatus",
    "DicomPeer",
    "host_allowed",
    "host_networks",
    "request_c_move",
    "send_c_store",
    "sop_name",
    "validate_ae_title",
    "validate_port",
]

logger = logging.getLogger("monai_robust.integrations.dicom.node")  # the node's logger: peers are its business
_QUERY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE

# DICOM PS3.5 6.2: AE is 1-16 characters of the default character repertoire, no backslash, no control characters;
# leading and trailing spaces are not significant.
_AE_CHARS = set(string.ascii_letters + string.digits + string.punctuation + " ") - {"\\"}
# success and warning statuses of a C-STORE (PS3.4 B.2.3): the peer kept the object
_STORE_OK = {0x0000, 0xB000, 0xB006, 0xB007}


def sop_name(ds: Dataset) -> str:
    """The SOP class of ``ds`` by name, or ``"unknown SOP class '<uid>'"``."""
    uid = UID(str(getattr(ds, "SOPClassUID", "")))
    return uid.name if uid.name != str(uid) else f"unknown SOP class {str(uid)!r}"


@dataclass
class DeliveryStatus:
    """The outcome of sending one object by C-STORE.

    Attributes:
        ok: whether the destination kept the object (status success or warning).
        status: the C-STORE status code (``None`` when no association or no answer).
        message: what happened, for the log.
    """

    ok: bool
    status: int | None
    message: str


def validate_ae_title(value: Any, what: str = "AE title") -> str:
    """Checks a DICOM AE title (1-16 characters of the DICOM default repertoire, no backslash or control characters).

    Args:
        value: the AE title.
        what: how to name it in the error message.

    Returns:
        The AE title without leading/trailing spaces.

    Raises:
        ValueError: When ``value`` is not a string, is empty or all spaces, is longer than 16 characters, or has a
            character outside the DICOM AE repertoire (quoted in the message).

    Example::

        >>> validate_ae_title(" ORTHANC ")
        'ORTHANC'
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r} ({type(value).__name__}).")
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError(f"{what} must have 1 to 16 characters that are not all spaces, got {value!r}.")
    if len(stripped) > 16:
        raise ValueError(f"{what} must have at most 16 characters, got {value!r} ({len(stripped)} characters).")
    bad = sorted({c for c in stripped if c not in _AE_CHARS})
    if bad:
        raise ValueError(
            f"{what} {value!r} has characters not allowed in a DICOM AE title: {bad!r} "
            "(allowed: printable ASCII except backslash)."
        )
    return stripped


def validate_port(port: Any, what: str, allow_zero: bool = False) -> int:
    """Checks a TCP port number (``0`` = any free port, when ``allow_zero``); returns it.

    Raises:
        ValueError: When ``port`` is not an integer in range (quoted).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not ((0 if allow_zero else 1) <= port <= 65535):
        low = 0 if allow_zero else 1
        raise ValueError(f"{what} must be an integer in [{low}, 65535], got {port!r}.")
    return port


@dataclass(frozen=True)
class DicomPeer:
    """A remote DICOM application entity: AE title, host and port.

    Args:
        ae_title: the peer's AE title (checked with :func:`validate_ae_title`).
        host: host name or IP address.
        port: TCP port.

    Raises:
        ValueError: For an invalid AE title, an empty host or a port outside [1, 65535].

    Example::

        >>> DicomPeer.parse("ORTHANC@127.0.0.1:4242")
        DicomPeer(ae_title='ORTHANC', host='127.0.0.1', port=4242)
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "peer AE title"))
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"peer host must be a non-empty string, got {self.host!r}.")
        object.__setattr__(self, "host", self.host.strip())
        validate_port(self.port, "peer port")

    @classmethod
    def parse(cls, spec: str | DicomPeer) -> DicomPeer:
        """Reads ``"AE@host:port"`` (IPv6 hosts in brackets: ``"AE@[::1]:4242"``).

        Raises:
            ValueError: When ``spec`` is not of that form (quoted in the message).
        """
        if isinstance(spec, DicomPeer):
            return spec
        if not isinstance(spec, str) or "@" not in spec or ":" not in spec.rpartition("@")[2]:
            raise ValueError(f"a DICOM peer must be written 'AE_TITLE@host:port', got {spec!r}.")
        ae, _, address = spec.rpartition("@")
        host, _, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            port_number = int(port)
        except ValueError:
            raise ValueError(
                f"a DICOM peer must be written 'AE_TITLE@host:port', got {spec!r} (port {port!r})."
            ) from None
        return cls(ae, host, port_number)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def send_c_store(dataset: Dataset, peer: str | DicomPeer, ae_title: str, timeout: float = 30.0) -> DeliveryStatus:
    """Sends one object (an SR) by C-STORE as an SCU; never raises for network trouble.

    Args:
        dataset: the object; its ``file_meta.TransferSyntaxUID`` (default explicit VR little endian) is proposed.
        peer: the destination, ``"AE@host:port"`` or a :class:`DicomPeer`.
        ae_title: the calling AE title.
        timeout: seconds for the ACSE, DIMSE and network timeouts.

    Returns:
        A :class:`DeliveryStatus` (``ok`` for success or warning statuses).

    Raises:
        ValueError: When ``peer`` cannot be parsed.

    Example::

        >>> send_c_store(sr, "ORTHANC@127.0.0.1:4242", "MONAI_ROBUST").message
        'C-STORE status 0x0000'
    """
    from pynetdicom import AE

    peer = DicomPeer.parse(peer)
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None:
        file_meta = dataset.file_meta = Dataset()
    if "TransferSyntaxUID" not in file_meta:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    syntaxes = list(dict.fromkeys([str(file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(str(dataset.SOPClassUID), syntaxes)
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    except Exception as e:  # e.g. a host name that does not resolve
        return DeliveryStatus(False, None, f"could not connect ({type(e).__name__}: {e})")
    if not assoc.is_established:
        if assoc.is_rejected and assoc.acceptor.primitive is not None:
            p = assoc.acceptor.primitive
            msg = f"association rejected ({p.result_str}, {p.source_str}: {p.reason_str})"
        elif assoc.acceptor.primitive is None:  # no A-ASSOCIATE answer at all
            msg = "no association: peer unreachable, connection refused or timed out"
        else:
            msg = "association aborted by the peer"
        return DeliveryStatus(False, None, msg)
    try:
        if not assoc.accepted_contexts:
            return DeliveryStatus(False, None, f"the peer accepted no presentation context for {sop_name(dataset)}")
        status = assoc.send_c_store(dataset)
    except Exception as e:
        return DeliveryStatus(False, None, f"C-STORE failed ({type(e).__name__}: {e})")
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or "Status" not in status:
        if assoc.is_aborted:
            return DeliveryStatus(
                False,
                None,
                f"the peer aborted the association during the C-STORE (it may not "
                f"accept objects from AE title {ae_title!r})",
            )
        return DeliveryStatus(False, None, "no C-STORE response (timeout or connection lost)")
    code = int(status.Status)
    comment = f" ({status.ErrorComment})" if "ErrorComment" in status else ""
    return DeliveryStatus(code in _STORE_OK, code, f"C-STORE status 0x{code:04X}{comment}")


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


def host_allowed(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether a peer address (IPv4, IPv6, IPv4-mapped IPv6) lies in one of ``networks`` (from :func:`host_networks`)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def request_c_move(source: str | DicomPeer, study_uid: str, ae_title: str, timeout: float = 30.0) -> DeliveryStatus:
    """Asks ``source`` to C-MOVE a study to the AE ``ae_title`` (Study Root), and waits for the final status.

    Args:
        source: the PACS, ``"AE@host:port"``.
        study_uid: StudyInstanceUID to retrieve.
        ae_title: the calling AE, also the move destination.
        timeout: seconds for the ACSE, DIMSE and network timeouts.

    Returns:
        A :class:`DeliveryStatus` with the final C-MOVE status (``ok`` when it is success or warning).

    Example::

        >>> request_c_move("ORTHANC@127.0.0.1:4242", "1.2.3", "MONAI_NODE").ok
        True
    """
    from pynetdicom import AE

    peer = DicomPeer.parse(source)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(_QUERY_MOVE)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return DeliveryStatus(False, None, f"C-MOVE: no association with {peer}")
    last: int | None = None
    try:
        for status, _ in assoc.send_c_move(query, ae_title, _QUERY_MOVE):
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
        ae_title,
        "none" if last is None else f"0x{last:04X}",
    )
    return DeliveryStatus(ok, last, "C-MOVE status " + ("none" if last is None else f"0x{last:04X}"))
