# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Installs what is missing of the project's dependencies (``pyproject.toml``: ``dependencies`` and the ``peers``
extra), never torch itself, and torchattacks 3.5.1 without its dependencies (it declares torchvision, which it never
imports); offline from ``WHEELHOUSE=/path/to/wheels`` when set. Used by ``bench/gpu.sh`` on a fresh GPU machine.

Usage::

    python bench/install_deps.py
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"pytorch-ignite": "ignite", "pyyaml": "yaml", "pillow": "PIL", "adversarial-robustness-toolbox": "art",
           "scikit-learn": "sklearn"}  # distribution -> module, where they differ


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower()


def requirements() -> list[str]:
    """The ``dependencies`` and ``peers`` requirements of ``pyproject.toml``, without torch."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python >= 3.11

        project = tomllib.loads(text)["project"]
        found = project["dependencies"] + project["optional-dependencies"]["peers"]
    except ModuleNotFoundError:  # Python 3.10: the quoted entries of the two lists
        blocks = re.findall(r"^(?:dependencies|peers) = \[(.*?)\]", text, re.M | re.S)
        found = [r for b in blocks for r in re.findall(r'"([^"]+)"', b)]
    return [r for r in found if _name(r) != "torch"]


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: install the CUDA build of torch for this machine first.", file=sys.stderr)
        return 1
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if os.environ.get("WHEELHOUSE"):
        pip += ["--no-index", "--find-links", os.environ["WHEELHOUSE"]]
    missing = [r for r in requirements() if importlib.util.find_spec(MODULES.get(_name(r), _name(r))) is None]
    if missing:
        print("installing:", missing, flush=True)
        subprocess.run(pip + missing, check=True)
    if importlib.util.find_spec("torchattacks") is None:
        subprocess.run(pip + ["--no-deps", "torchattacks==3.5.1"], check=True)
    torch = importlib.import_module("torch")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"torch {torch.__version__}, {gpu}; nothing else missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
