# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The shipped bundles: found in a checkout, copied without overwriting anything, and inside the built wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from monai_robust.bundle.packaged import copy_bundle, main, packaged_bundles

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["robust_ct_classification", "robust_xray_classification"]


def test_packaged_bundles_found():
    found = packaged_bundles()
    assert sorted(found) == NAMES
    assert all((p / "configs" / "inference.json").is_file() for p in found.values())


def test_copy(tmp_path, capsys):
    dest = copy_bundle("robust_xray_classification", tmp_path / "mine")
    assert json.loads((dest / "configs" / "metadata.json").read_text())["name"]
    assert (dest / "large_files.yml").is_file() and (dest / "docs" / "README.md").is_file()
    with pytest.raises(ValueError, match="not an empty folder"):
        copy_bundle("robust_xray_classification", dest)  # never over an existing bundle
    with pytest.raises(ValueError, match="robust_ct_classification"):
        copy_bundle("no_such_bundle", tmp_path / "other")  # the message lists what exists
    assert main(["copy", "robust_ct_classification", str(tmp_path / "ct")]) == 0
    assert (tmp_path / "ct" / "configs" / "train.json").is_file()
    assert main(["copy", "nope", str(tmp_path / "x")]) == 2 and "available" in capsys.readouterr().err
    assert main(["list"]) == 0 and "robust_ct_classification" in capsys.readouterr().out


RUN_OUTPUTS = ("data", "models", "outputs")  # git-ignored run outputs inside a bundle folder


@pytest.mark.slow
def test_wheel_contains_bundles(tmp_path):
    """``python -m build --wheel`` (no isolation: the test machine has no index) puts every bundle file in the wheel."""
    pytest.importorskip("build", reason="the 'build' package builds the wheel (pip install build)")
    src = tmp_path / "src"  # a clean copy: the build writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "outputs", "runs", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("monai_robust-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for bundle in NAMES:
        expected = {f"monai_robust/_bundles/{p.relative_to(ROOT / 'bundles').as_posix()}"
                    for p in (ROOT / "bundles" / bundle).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and p.relative_to(ROOT / "bundles" / bundle).parts[0] not in RUN_OUTPUTS}
        assert expected and expected <= names, sorted(expected - names)
        # what a run leaves in the bundle (data, checkpoints, reports) is never packaged
        assert not any(n.split("/")[3] in RUN_OUTPUTS for n in names if n.startswith(f"monai_robust/_bundles/{bundle}/")
                       and n.count("/") > 3)
    assert "monai_robust/bundle/packaged.py" in names and "monai_robust/__init__.py" in names
    assert not any(n.startswith(("tests/", "bench/", "tutorials/", "bundles/")) for n in names)
