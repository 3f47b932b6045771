# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A throwaway MONAI Label server for tests: ``monailabel start_server`` (run as ``python -m monailabel.main``, which
is what the ``monailabel`` script executes) with a copy of ``apps/monailabel`` in a temporary folder, on loopback with
a random port, talked to with ``requests``, and terminated on :meth:`MonaiLabelServer.stop`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.integrations.orthanc import ServerProcess, free_port, missing_prerequisite

__all__ = ["APP_DIR", "MonaiLabelServer", "conf_for", "expected_probabilities", "ok_json", "require_monailabel_server"]

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "monailabel"


def require_monailabel_server() -> None:
    """Skips (fails on CI) the calling test when MONAI Label's server cannot be imported, saying what to install."""
    from monai_robust.integrations.monailabel_app import SERVER_HINT, has_monailabel_app

    missing = [m for m in ("monailabel", "uvicorn", "fastapi", "multipart", "pydicom_seg") if not importlib.util.find_spec(m)]
    if missing or not has_monailabel_app:
        missing_prerequisite(f"{SERVER_HINT} Missing: {missing or 'monailabel.interfaces.app does not import'}.")


class MonaiLabelServer(ServerProcess):
    """One MONAI Label server process serving ``apps/monailabel`` (copied into ``workdir``).

    Args:
        workdir: an empty folder for the app copy, the studies and the log.
        studies: a folder or a DICOMweb root (default: an empty ``workdir/studies``).
        conf: the ``--conf`` pairs.
    """

    stop_timeout = 15.0
    log_chars = 4000

    def __init__(self, workdir: str | Path, conf: dict[str, str], studies: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.app_dir = self.workdir / "app"
        self.studies = studies or str(self.workdir / "studies")
        self.conf = dict(conf)
        self.port = free_port()
        self.log_path = self.workdir / "monailabel.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """The command line: ``monailabel start_server ...`` as ``python -m monailabel.main start_server ...``."""
        conf = [x for k, v in self.conf.items() for x in ("--conf", k, v)]
        return [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(self.app_dir),
                "--studies", self.studies, "--host", "127.0.0.1", "--port", str(self.port), *conf]

    def start(self, timeout: float = 180.0) -> MonaiLabelServer:
        """Starts the server and waits until ``GET /info/`` answers.

        Raises:
            RuntimeError: When the server exits or does not answer within ``timeout`` seconds (quotes its log).
        """
        shutil.copytree(APP_DIR, self.app_dir, ignore=shutil.ignore_patterns("logs", "model", "lib", "__pycache__"))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MONAI_LABEL_DATASTORE_CACHE_PATH": str(self.workdir / "cache"),
            "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(self.workdir / "cache"),
            "MONAI_LABEL_SESSION_PATH": str(self.workdir / "sessions"),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise RuntimeError(f"monailabel start_server exited with code {code}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/info/", timeout=5).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"monailabel start_server did not answer on {self.url} within {timeout} s:\n{self.log_tail()}")

    def infer(
        self, model: str, file: Path | None = None, image: str = "", params: dict[str, Any] | None = None
    ) -> requests.Response:
        """``POST /infer/<model>?output=json`` with an uploaded ``file`` or a datastore ``image`` id."""
        files = {"file": (file.name, file.read_bytes())} if file is not None else None
        return requests.post(
            f"{self.url}/infer/{model}",
            params={"output": "json", **({"image": image} if image else {})},
            files=files,
            data={"params": json.dumps(params or {})},
            timeout=120,
        )


def conf_for(trained_xray_bundle: tuple[Path, Path, dict[str, Any]]) -> dict[str, str]:
    """``--conf bundles`` naming the trained bundle (configs from the repo, weights and data in ``bundle_root``)."""
    bundle_dir, _, overrides = trained_xray_bundle
    return {"bundles": json.dumps({"xray": {"bundle": str(bundle_dir), **overrides}}, separators=(",", ":"))}


def expected_probabilities(predictor: Any, path: Path) -> dict[str, float]:
    """The bundle predictor's class probabilities for one image file, computed in this process."""
    from monai_robust.data.datalist import load_image

    return predictor.predict(predictor.preprocess(load_image(path))[None])[0]["probabilities"]


def ok_json(response: Any) -> dict[str, Any]:
    """The JSON of a ``200`` answer (else fails, quoting the answer)."""
    assert response.status_code == 200, response.text[:1000]
    return response.json()
