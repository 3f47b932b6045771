# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The one place that names a bundle's folder layout (the MONAI model-zoo layout plus what this toolkit adds).

::

    <bundle>/configs/inference.json | inference.yaml | inference.yml   the inference config (single source of truth)
    <bundle>/configs/train.json | train.yaml | ...                     the training config
    <bundle>/configs/metadata.json                                     the zoo metadata (+ the input contract)
    <bundle>/models/model.pt                                           the user's checkpoint (never overwritten)
    <bundle>/models/model_hardened.pt                                  the hardened checkpoint written beside it
    <bundle>/models/guard.pt                                           the fitted detector guard
    <dataset_dir>/dataset.json                                         a decathlon-style datalist
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_SUFFIXES",
    "DATALIST_NAME",
    "GUARD_NAME",
    "HARDENED_NAME",
    "BundleLayout",
]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
CHECKPOINT_NAME = "model.pt"
HARDENED_NAME = "model_hardened.pt"
GUARD_NAME = "guard.pt"
DATALIST_NAME = "dataset.json"


@dataclass(frozen=True)
class BundleLayout:
    """Paths inside one bundle folder.

    Args:
        root: the bundle folder (the one holding ``configs/``).

    Example::

        >>> layout = BundleLayout("bundles/robust_xray_classification")
        >>> layout.config("inference")
        PosixPath('bundles/robust_xray_classification/configs/inference.json')
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def metadata(self) -> Path:
        return self.configs / "metadata.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoint(self) -> Path:
        return self.models / CHECKPOINT_NAME

    @property
    def hardened_checkpoint(self) -> Path:
        return self.models / HARDENED_NAME

    @property
    def guard(self) -> Path:
        return self.models / GUARD_NAME

    def find_config(self, name: str) -> Path | None:
        """``configs/<name>.json|yaml|yml``, the first that exists, else ``None``."""
        for suffix in CONFIG_SUFFIXES:
            path = self.configs / f"{name}{suffix}"
            if path.is_file():
                return path
        return None

    def config(self, name: str) -> Path:
        """Like :meth:`find_config`, but a missing config is an error.

        Raises:
            FileNotFoundError: Naming the folder and the suffixes tried.
        """
        path = self.find_config(name)
        if path is None:
            tried = ", ".join(f"{name}{s}" for s in CONFIG_SUFFIXES)
            raise FileNotFoundError(f"{self.configs}: no {tried}; is {str(self.root)!r} a MONAI bundle folder?")
        return path
