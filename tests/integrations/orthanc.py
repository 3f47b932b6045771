# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A throwaway Orthanc PACS for tests: started on loopback from a test configuration in a temporary folder (random
free DICOM and HTTP ports, its own storage and index, no remote access; optionally the DICOMweb plugin), talked to
through its REST API with ``urllib`` only, and killed on :meth:`OrthancServer.stop`.

Debian's ``orthanc`` package provides the ``Orthanc`` binary and ``orthanc-dicomweb`` the DICOMweb plugin
(``.ci/orthanc.sh`` installs both); where one is absent, :func:`require_orthanc` / :func:`require_dicomweb_plugin`
skip the calling test with a message that says how to get it, and fail it on CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "OrthancServer",
    "find_dicomweb_plugin",
    "find_orthanc",
    "free_port",
    "missing_prerequisite",
    "require_dicomweb_plugin",
    "require_orthanc",
]

_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/bin/Orthanc", "/usr/local/sbin/Orthanc")
_DICOMWEB_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def missing_prerequisite(reason: str) -> None:
    """Skips the calling test with ``reason``, or fails it when ``CI`` is set (CI installs every prerequisite, so a
    missing one there is a broken install, not a reason to skip)."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI: a prerequisite of this test is missing: {reason}", pytrace=False)
    pytest.skip(reason)


class ServerProcess:
    """A server subprocess started by a test: ``stop`` (terminate, then kill), context manager and log tail.

    Subclasses set ``self.process`` (``subprocess.Popen`` or ``None``) and ``self.log_path``, and define ``start``.
    """

    process: subprocess.Popen | None = None
    log_path: Path
    stop_timeout: float = 10.0
    log_chars: int = 3000

    def start(self) -> ServerProcess:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def stop(self) -> None:
        """Terminates the process (kills it after ``stop_timeout`` s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_tail(self, chars: int | None = None) -> str:
        """The end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-(chars or self.log_chars):]
        except OSError:
            return "(no log)"


class _ExitedAtStart(RuntimeError):
    """Orthanc exited while starting (its log is in the message)."""


def find_orthanc() -> str | None:
    """The ``Orthanc`` binary (``$ORTHANC_BINARY``, ``PATH``, then Debian's ``/usr/sbin/Orthanc``), or ``None``."""
    env = os.environ.get("ORTHANC_BINARY")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("Orthanc")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def require_orthanc() -> str:
    """The ``Orthanc`` binary, or skips the calling test with a message saying why and how to install it."""
    binary = find_orthanc()
    if binary is None and os.environ.get("ORTHANC_BINARY"):
        missing_prerequisite(
            f"ORTHANC_BINARY={os.environ['ORTHANC_BINARY']!r} is not an executable: the real-PACS tests are skipped."
        )
    if binary is None:
        missing_prerequisite(
            "Orthanc is not installed (no 'Orthanc' binary on PATH or in /usr/sbin): run .ci/orthanc.sh "
            "(apt-get install -y orthanc) to run the real-PACS tests; apt is unavailable or failed here."
        )
    return binary


def find_dicomweb_plugin() -> str | None:
    """Orthanc's DICOMweb plugin (``$ORTHANC_DICOMWEB_PLUGIN``, then Debian's ``orthanc-dicomweb`` paths), or ``None``."""
    env = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if env:
        return env if os.path.isfile(env) else None
    return next((c for c in _DICOMWEB_CANDIDATES if os.path.isfile(c)), None)


def require_dicomweb_plugin() -> str:
    """Orthanc's DICOMweb plugin, or skips (fails on CI) the calling test with a message saying how to install it."""
    require_orthanc()
    plugin = find_dicomweb_plugin()
    if plugin is None:
        missing_prerequisite(
            "Orthanc's DICOMweb plugin is not installed (no libOrthancDicomWeb.so in /usr/share/orthanc/plugins or "
            "$ORTHANC_DICOMWEB_PLUGIN): run .ci/orthanc.sh (apt-get install -y orthanc-dicomweb)."
        )
    return plugin


def dicomweb_orthanc(workdir: Path) -> OrthancServer:
    """An Orthanc with its DICOMweb plugin (use as a context manager), or skips (fails on CI) the calling test when the
    plugin or ``dicomweb-client`` is missing, saying how to install it."""
    plugin = require_dicomweb_plugin()
    try:
        import dicomweb_client  # noqa: F401
    except ImportError:
        missing_prerequisite("dicomweb-client is not installed: pip install -e '.[dicom]'")
    return OrthancServer(workdir, dicomweb_plugin=plugin)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OrthancServer(ServerProcess):
    """One Orthanc process on ``127.0.0.1`` with a test configuration written to ``workdir``.

    Args:
        workdir: an empty folder for the configuration, storage, index and log.
        aet: Orthanc's own AE title.
        modalities: DICOM peers Orthanc knows, ``{name: (ae_title, host, port)}`` (they may store to it, and it can
            send to them with ``POST /modalities/<name>/store``).
        binary: the ``Orthanc`` executable (default: :func:`find_orthanc`).
        dicomweb_plugin: the DICOMweb plugin's ``.so`` to load (:func:`find_dicomweb_plugin`); its root is
            :attr:`dicomweb_url` (``<url>/dicom-web``). ``None``: no plugins.

    Example::

        >>> with OrthancServer(tmp_path, modalities={"node": ("NODE", "127.0.0.1", 11112)}) as pacs:
        ...     instance_id = pacs.upload(Path("image.dcm"))["ID"]
    """

    def __init__(
        self,
        workdir: str | Path,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        binary: str | None = None,
        dicomweb_plugin: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.binary = binary or find_orthanc()
        if self.binary is None:
            raise RuntimeError("the 'Orthanc' binary was not found (install it with .ci/orthanc.sh).")
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.dicomweb_plugin = dicomweb_plugin
        self.log_path = self.workdir / "orthanc.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Orthanc's REST root, ``http://127.0.0.1:<http_port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS / WADO-RS / STOW-RS), ``<url>/dicom-web``."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration used (a plain dict, written as ``orthanc.json``)."""
        return {
            "Name": "monai_robust-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "Plugins": [self.dicomweb_plugin] if self.dicomweb_plugin else [],
            "DicomWeb": {"Enable": bool(self.dicomweb_plugin), "Root": "/dicom-web/", "EnableWado": False},
            "ConcurrentJobs": 1,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,  # only the configured modalities (our node) may store
            "DicomScuTimeout": 10,
            "DicomAssociationCloseDelay": 0,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {
                name: {
                    "AET": aet,
                    "Host": host,
                    "Port": int(port),
                    "AllowEcho": True,
                    "AllowStore": True,
                    "AllowFind": True,
                    "AllowMove": True,
                    "AllowGet": True,
                }
                for name, (aet, host, port) in self.modalities.items()
            },
            "SaveJobs": False,
            "StableAge": 3600,
            "HttpTimeout": 60,
        }

    def start(self, timeout: float = 30.0, attempts: int = 3) -> OrthancServer:
        """Writes the configuration, starts Orthanc and waits until its REST API answers.

        A start that fails because Orthanc exits (e.g. a port taken between choosing and binding it) is retried with
        new ports, ``attempts`` times in all.

        Raises:
            RuntimeError: When Orthanc exits or does not answer within ``timeout`` seconds (quotes its log).
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except _ExitedAtStart:
                if attempt == attempts:
                    raise
                self.http_port, self.dicom_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> OrthancServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [self.binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise _ExitedAtStart(f"Orthanc exited with code {code} at start:\n{self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout} s:\n{self.log_tail()}")

    # --- REST -------------------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict | list | None = None,
        timeout: float = 60.0,
        content_type: str = "application/dicom",
    ) -> Any:
        """One REST call; JSON answers are decoded, others returned as bytes.

        Raises:
            RuntimeError: On an HTTP error status (quotes Orthanc's answer).
        """
        data, headers = None, {}
        if isinstance(body, (dict, list)):
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif body is not None:
            data, headers = body, {"Content-Type": content_type}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Orthanc {method} {path} -> HTTP {e.code}: {e.read()[:500]!r}") from e
        return json.loads(payload) if "json" in ctype else payload

    def get(self, path: str) -> Any:
        """``GET path``."""
        return self.request("GET", path, timeout=10.0)

    def post(self, path: str, body: bytes | dict | list | None = None, timeout: float = 60.0) -> Any:
        """``POST path``."""
        return self.request("POST", path, body, timeout=timeout)

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Stores one DICOM file (``POST /instances``); returns Orthanc's answer (``ID``, ``ParentStudy``, ...)."""
        return self.post("/instances", Path(path).read_bytes())

    def study_ids(self, study_uid: str) -> list[str]:
        """Orthanc's ids of the studies with ``StudyInstanceUID == study_uid`` (one per patient that has it)."""
        hits = self.request("POST", "/tools/lookup", study_uid.encode(), timeout=10.0, content_type="text/plain")
        return [hit["ID"] for hit in hits if hit.get("Type") == "Study"]

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """The instances Orthanc holds for a StudyInstanceUID (``[]`` when it has none)."""
        return [i for sid in self.study_ids(study_uid) for i in self.get(f"/studies/{sid}/instances")]

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Declares (or replaces) a DICOM peer at run time (``PUT /modalities/<name>``)."""
        self.request("PUT", f"/modalities/{name}", {"AET": ae_title, "Host": host, "Port": int(port)}, timeout=10.0)

    def send_to_modality(self, name: str, resources: list[str], timeout: float = 60.0) -> dict[str, Any]:
        """Orthanc C-STOREs resources (instance/series/study ids) to a peer and waits (``POST /modalities/<name>/store``).

        Raises:
            RuntimeError: When Orthanc reports the job failed (e.g. the peer rejected the association).
        """
        return self.post(f"/modalities/{name}/store", {"Resources": resources, "Synchronous": True}, timeout=timeout)
