# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai_robust.utils.overrides``: unknown override ids are errors with close matches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import monai
import pytest
from monai.bundle import ConfigParser

from monai_robust.utils.overrides import (
    bundle_vocabulary,
    check_cli_overrides,
    check_override_ids,
    cli_overrides,
    unknown_override_ids,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "robust_xray_classification"
MAIN = str(Path(monai.__file__).parent / "bundle" / "__main__.py")  # sys.argv[0] under python -m monai.bundle


def _parser() -> ConfigParser:
    return ConfigParser({"num_epochs": 4, "image_size": 32, "train": {"dataloader": {"batch_size": 8}}, "h": [{"a": 1}]})


def test_unknown_ids_and_close_matches():
    unknown = unknown_override_ids(
        _parser(), ["num_epochs", "num_epoch", "train#dataloader#bach_size", "h#0#_disabled_", "zzz", "train::dataloader"]
    )
    assert unknown == {"num_epoch": ["num_epochs"], "train#dataloader#bach_size": ["train#dataloader#batch_size"], "zzz": []}
    with pytest.raises(ValueError, match=r"'num_epoch' \(did you mean 'num_epochs'\?\).*'zzz' \(no close match\)"):
        check_override_ids(_parser(), ["num_epoch", "zzz"])
    check_override_ids(_parser(), ["image_size"])
    assert unknown_override_ids([_parser(), ConfigParser({"guard_eps": 0.1})], ["guard_eps", "guard_esp"]) == {
        "guard_esp": ["guard_eps"]
    }


def test_bundle_vocabulary_holds_every_stage():
    parsers = bundle_vocabulary([BUNDLE / "configs" / "train.json"])
    assert "num_epochs" in parsers[0] and "guard_eps" not in parsers[0]
    assert any("guard_eps" in p for p in parsers) and any("harden_epochs" in p for p in parsers)


def test_cli_parsing():
    workflow, ids = cli_overrides(
        ["training", "--config_file", "['a.json', 'b.json']", "--num_epoch", "1", "--amp", "--x=3", "--bundle_root", "."]
    )
    assert workflow == {"config_file": ["a.json", "b.json"]} and ids == ["num_epoch", "amp", "x", "bundle_root"]


def test_check_cli_overrides_against_the_bundle_files():
    files = str([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "harden.json")])
    ok = [MAIN, "run", "--config_file", files, "--num_epochs", "1", "--harden_epochs", "1", "--bundle_root", "x"]
    assert check_cli_overrides(ok) == ["num_epochs", "harden_epochs", "bundle_root"]
    with pytest.raises(ValueError, match=r"'num_epoch' \(did you mean 'num_epochs'"):
        check_cli_overrides([MAIN, "run", "--config_file", files, "--num_epoch", "1"])
    # an id another stage of the bundle defines may be given to any chain (one set of overrides for every stage)
    assert check_cli_overrides([MAIN, "run", "--config_file", files, "--guard_eps", "0.1"]) == ["guard_eps"]
    assert check_cli_overrides(["pytest", "--num_epoch", "1"]) == []  # not the bundle command line: nothing to read


def test_bundle_command_line_refuses_a_misspelt_override(tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
           "--bundle_root", str(tmp_path), "--num_epoch", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "'num_epoch' (did you mean 'num_epochs'" in proc.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "data").exists()  # stopped before any work
