# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A MONAI Label app serving trained monai_robust bundles (and any bundle the user names) as classification models
with their detector guard and, on request, the robustness of the image (:mod:`monai_robust.integrations.monailabel`).

``apps/monailabel/main.py`` (repository root) imports :class:`RobustClassificationApp`, so the server runs with::

    monailabel start_server --app apps/monailabel --studies /data/images \\
        --conf bundles '{"xray": "bundles/robust_xray_classification"}'

App configuration (``--conf KEY VALUE``):

- ``bundles``: which bundles to serve, as JSON ``{name: folder}`` or ``{name: {"bundle": folder, **overrides}}``
  (overrides go to :class:`~monai_robust.bundle.predictor.BundlePredictor`, e.g. ``bundle_root``, ``image_size``), or
  a comma-separated list of folders (named by folder). Default: the project's bundles under ``bundles/`` that hold a
  trained ``models/model.pt``; the app refuses to start when none does.
- ``device``: where the networks run (default ``cpu``).
- ``dicomweb_search_filter``: QIDO-RS filter of a DICOMweb datastore (``--studies http://.../dicom-web``), JSON; default
  ``{}`` (every modality: MONAI Label's own default keeps only CT).
- ``dicomweb_convert_to_nifti``: ``false`` by default (the task reads DICOM series folders itself; MONAI Label's
  default converts each series to NIfTI first).

  These two replace MONAI Label's ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` / ``..._CONVERT_TO_NIFTI`` settings (MONAI
  Label exports every setting to the environment of its server, so an environment value cannot be told from its
  default): set them with ``--conf``.

The server needs more than the infer task: ``requirements-monailabel-server.txt`` (installed with ``--no-deps``, CPU
only) and the ``pydicom_seg`` shim in ``apps/monailabel/pydicom_seg_shim`` (``pip install apps/monailabel/pydicom_seg_shim``).
MONAI Label downloads dcmqi at start-up unless ``bin/itkimage2segimage`` exists in the app; the app ships an executable
placeholder that fails with a message, since classification never writes DICOM SEG.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.utils import optional_import

from monai_robust.integrations.monailabel import monailabel_infers

MONAILabelApp, has_monailabel_app = optional_import("monailabel.interfaces.app", name="MONAILabelApp", as_type="base")
settings, _ = optional_import("monailabel.config", name="settings")

__all__ = ["RobustClassificationApp", "default_bundles", "parse_bundles_conf"]

logger = logging.getLogger(__name__)

PROJECT_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
SERVER_HINT = (
    "MONAI Label's server is not importable: install `pip install --no-deps -r requirements-monailabel.txt "
    "-r requirements-monailabel-server.txt` and the shim `pip install --no-deps apps/monailabel/pydicom_seg_shim` "
    "(repository root)."
)


def default_bundles(folder: str | Path = PROJECT_BUNDLES) -> dict[str, dict[str, Any]]:
    """The bundles under ``folder`` that hold a trained ``models/model.pt``, as ``{folder name: {"bundle": path}}``.

    Example::

        >>> default_bundles()  # after training bundles/robust_xray_classification in place
        {'robust_xray_classification': {'bundle': '.../bundles/robust_xray_classification'}}
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        b.name: {"bundle": str(b)}
        for b in sorted(folder.iterdir())
        if (b / "configs").is_dir() and (b / "models" / "model.pt").is_file()
    }


def parse_bundles_conf(value: str | None) -> dict[str, dict[str, Any]]:
    """The app's ``bundles`` configuration as ``{name: {"bundle": folder, **overrides}}``.

    Args:
        value: JSON ``{name: folder}`` / ``{name: {"bundle": folder, **overrides}}``, a comma-separated list of
            folders, or ``None``/empty for :func:`default_bundles`.

    Raises:
        ValueError: When the JSON is malformed, an entry has no ``bundle`` folder, a folder has no ``configs/``, or no
            bundle is left (says how to name one).

    Example::

        >>> parse_bundles_conf('{"xray": {"bundle": "bundles/robust_xray_classification", "bundle_root": "/runs/x"}}')
        {'xray': {'bundle': 'bundles/robust_xray_classification', 'bundle_root': '/runs/x'}}
    """
    text = (value or "").strip()
    if not text:
        entries: dict[str, Any] = default_bundles()
        if not entries:
            raise ValueError(
                f"no trained bundle under {PROJECT_BUNDLES} (no models/model.pt): train one or name it with "
                "--conf bundles '{\"name\": \"/path/to/bundle\"}'."
            )
    elif text.startswith("{"):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--conf bundles is not valid JSON ({e}): {text!r}.") from e
    else:
        entries = {Path(p.strip()).name: p.strip() for p in text.split(",") if p.strip()}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        spec = {"bundle": entry} if isinstance(entry, (str, os.PathLike)) else entry
        if not isinstance(spec, Mapping) or not spec.get("bundle"):
            raise ValueError(f"--conf bundles entry {name!r} needs a bundle folder, got {entry!r}.")
        if not (Path(spec["bundle"]) / "configs").is_dir():
            raise ValueError(f"--conf bundles entry {name!r}: {str(spec['bundle'])!r} is not a bundle (no configs/).")
        out[str(name)] = dict(spec)
    if not out:
        raise ValueError(f"--conf bundles names no bundle: {text!r}.")
    return out


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class RobustClassificationApp(MONAILabelApp):
    """MONAI Label app with one :class:`~monai_robust.integrations.monailabel.RobustClassificationInferTask` per
    configured bundle; no training, active learning or scoring (the bundles train with ``monai.bundle run``).

    Args:
        app_dir: the app folder (MONAI Label passes ``--app``).
        studies: the datastore (folder or DICOMweb URL, ``--studies``).
        conf: the ``--conf`` pairs (``bundles``, ``device``, ``dicomweb_search_filter``, ``dicomweb_convert_to_nifti``).

    Raises:
        RuntimeError: When MONAI Label's server is not importable (says what to install).
        ValueError: From :func:`parse_bundles_conf`.

    Example::

        >>> app = RobustClassificationApp("apps/monailabel", "/data", {"bundles": "bundles/robust_xray_classification"})
        >>> sorted(app.info()["models"])
        ['robust_xray_classification']
    """

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str] | None) -> None:
        if not has_monailabel_app:
            raise RuntimeError(SERVER_HINT)
        conf = dict(conf or {})
        self.bundle_specs = parse_bundles_conf(conf.get("bundles"))
        self.device = conf.get("device", "cpu")
        if str(studies).startswith(("http://", "https://")):
            search = conf.get("dicomweb_search_filter", "{}")
            try:
                settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER = json.loads(search)
            except json.JSONDecodeError as e:
                raise ValueError(f"--conf dicomweb_search_filter is not valid JSON ({e}): {search!r}.") from e
            convert = _flag(conf.get("dicomweb_convert_to_nifti"), False)
            settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI = convert
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_robust",
            description="Classification with an adversarial-input guard and per-image robustness (monai_robust)",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, Any]:
        """One robust classification task per configured bundle."""
        tasks = {}
        for name, spec in self.bundle_specs.items():
            overrides = {k: v for k, v in spec.items() if k != "bundle"}
            tasks.update(monailabel_infers({name: spec["bundle"]}, device=self.device, **overrides))
            logger.info(f"serving bundle {spec['bundle']!r} as model {name!r}")
        return tasks

    def init_strategies(self) -> dict[str, Any]:
        """None: this app only infers."""
        return {}
