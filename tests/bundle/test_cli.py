# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust`` end to end on the two zoo bundles as published (each trained briefly with its own train config):
evaluate, guard, predict, harden; the units claim (ε stored units stay ε after writing and re-loading); off-contract
inputs through predict."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_robust.attacks import PGD
from monai_robust.bundle.cli import main, parse_overrides
from monai_robust.bundle.data import read_items
from monai_robust.bundle.export import quantize_toward, write_stored
from monai_robust.bundle.predictor import BundlePredictor
from tests.bundle.conftest import ENDO_INFER, TEMPLATE_INFER

CASES = {
    # fixture, test datalist, overrides (MONAI style), a module for sparsity blocks
    "template": ("template_bundle", "data/test_samples.json", TEMPLATE_INFER, "features.denseblock2"),
    "endoscopic": ("endoscopic_bundle", "label/test_samples.json", ENDO_INFER, "layer2"),
}


def _flags(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += [f"--{k}", json.dumps(v)]
    return out


def _cli(capsys, *args: str, quiet: bool = True) -> dict:
    capsys.readouterr()
    rc = main([*args, "--device", "cpu", *(["--quiet"] if quiet else [])])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    return json.loads(out)


@pytest.fixture(params=sorted(CASES))
def case(request):
    fixture, datalist, overrides, block = CASES[request.param]
    root = request.getfixturevalue(fixture)
    return request.param, root, root / datalist, overrides, block


def test_parse_overrides():
    assert parse_overrides(["--network_def#spatial_dims", "2", "--ckpt_path=m.pt", "--size", "[32, 32]"]) == {
        "network_def#spatial_dims": 2, "ckpt_path": "m.pt", "size": [32, 32]
    }
    with pytest.raises(ValueError, match="no value"):
        parse_overrides(["--ckpt_path"])


@pytest.mark.slow
def test_units_claim(case, tmp_path):
    """A perturbation of eps stored units stays within eps after quantising, writing (PNG: lossless; the endoscopic
    JPEG frames are written as PNG, since JPEG is lossy) and re-loading through the bundle's own loading part."""
    name, root, datalist, overrides, _ = case
    p = BundlePredictor(root, overrides, device="cpu", guard=False, bounds=(0.0, 255.0))
    items = read_items(datalist, p.class_names)[:4]
    eps = 3.0
    for i, item in enumerate(items):
        clean = p.load(item)
        adv = PGD(p.model, eps=eps, num_steps=5, bounds=p.bounds)(clean.as_subclass(torch.Tensor)[None], torch.tensor([item["label"]]))[0]
        q = quantize_toward(adv, clean.as_subclass(torch.Tensor))
        path = write_stored(clean.clone().copy_(q), tmp_path / f"{name}{i}.png")
        again = p.load({"image": str(path)}).as_subclass(torch.Tensor)
        assert torch.equal(again, q)
        assert float((again - clean.as_subclass(torch.Tensor)).abs().max()) <= eps
        assert float(again.min()) >= 0 and float(again.max()) <= 255


@pytest.mark.slow
def test_evaluate_guard_predict_harden(case, capsys):
    name, root, datalist, overrides, block = case
    args = ["--bundle", str(root), str(datalist), *_flags(overrides)]
    n_test = len(json.loads(datalist.read_text()))

    ev = _cli(capsys, "evaluate", *args, "--eps", "2", "8", "--aa-steps", "2", "--aa-queries", "5")
    assert ev["suite"]["suite"] == "standard" and ev["suite"]["autoattack"]["standard"] is False
    tm = ev["threat_model"]
    assert tm["bounds"] == [0.0, 255.0] and tm["eps"] == [2.0, 8.0] and tm["gradient_approximations"] == []
    assert ("inferred" in tm["bounds_source"]) is (name == "template")  # the template declares no stored range
    clean = ev["summary"]["clean"]
    assert clean["n"] == n_test
    for rows in ev["summary"]["attacks"].values():
        assert [r["eps"] for r in rows] == [2.0, 8.0] and all(r["accuracy"] <= clean["accuracy"] + 1e-9 for r in rows)
    assert (root / "robustness" / "evaluate" / "evaluation.json").is_file()

    g = _cli(capsys, "guard", *args, "--eps", "32", "--fpr", "0.25")
    assert Path(g["guard"]).is_file() and g["n_calibration"] >= 4 and 0 <= g["calibration_fpr"] <= 0.25

    pr = _cli(capsys, "predict", *args)
    assert len(pr["predictions"]) == n_test
    for rec in pr["predictions"]:
        assert not rec["refused"] and rec["predicted_class"] in rec["probabilities"]
        assert set(rec["guard"]) == {"adversarial_suspected", "score", "threshold"}

    ckpt = root / "models" / "model.pt"
    before = hashlib.md5(ckpt.read_bytes()).hexdigest()
    h = _cli(capsys, "harden", *args, "--eps", "2", "--steps", "2", "--blocks", block, "--block-k", "0.3", quiet=False)
    assert Path(h["checkpoint"]).name == "model_hardened.pt" and h["blocks"]["after"] == [block]
    assert hashlib.md5(ckpt.read_bytes()).hexdigest() == before  # theirs is never overwritten
    hp = BundlePredictor(root, overrides, device="cpu", hardened=True, guard=False)
    assert hp.bundle.checkpoint.name == "model_hardened.pt" and hp.bundle.blocks["block"] == "topk"


def readme_recipe() -> list[list[str]]:
    """The command lines of README's "Your own bundle" recipe, as written (comments dropped)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Your own bundle", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_recipe_runs_as_written(endoscopic_bundle, tmp_path, capsys):
    """README's three lines for "my own bundle", on the zoo's endoscopic bundle (a copy), with only the override
    that the README says was added to each line (the fixture's 32-px frames) and --device cpu."""
    lines = readme_recipe()
    assert [cmd[:3] for cmd in lines] == [["python", "-m", "monai_robust"]] * 3
    assert [cmd[3] for cmd in lines] == ["evaluate", "harden", "guard"]
    root = tmp_path / "my_bundle"
    shutil.copytree(endoscopic_bundle, root, ignore=shutil.ignore_patterns("robustness", "*_hardened.pt", "guard.pt"))
    outputs = [_cli(capsys, *[t.replace("my_bundle", str(root), 1) if t.startswith("my_bundle") else t for t in cmd[3:]],
                    *_flags(ENDO_INFER)) for cmd in lines]
    assert (root / "robustness" / "evaluate" / "evaluation.json").is_file() and outputs[0]["summary"]["headline"]
    assert (root / "models" / "model_hardened.pt").is_file() and Path(outputs[2]["guard"]) == root / "models" / "guard.pt"


def test_off_contract_through_predict(template_bundle, tmp_path, capsys):
    rgb, flat = tmp_path / "rgb.png", tmp_path / "flat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(rgb)
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(flat)
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([{"image": str(rgb)}, {"image": str(flat)}]))
    out = _cli(capsys, "predict", "--bundle", str(template_bundle), str(listing), *_flags(TEMPLATE_INFER))
    by_name = {Path(r["image"]).name: r for r in out["predictions"]}
    assert by_name["rgb.png"]["refused"] and by_name["rgb.png"]["predicted_class"] is None
    assert [f["code"] for f in by_name["rgb.png"]["contract"]] == ["channels"]
    assert not by_name["flat.png"]["refused"] and [f["code"] for f in by_name["flat.png"]["contract"]] == ["constant_image"]


def test_missing_checkpoint_and_module_entry(shared_bundles, tmp_path):
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    proc = subprocess.run(
        [sys.executable, "-m", "monai_robust", "predict", "--bundle", str(shared_bundles / "classification_template"),
         str(listing), "--ckpt_path", str(tmp_path / "none.pt")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1 and "`ckpt_path`" in proc.stderr


def test_screen_and_serve_delegate_to_the_dicom_cli(capsys):
    assert main(["screen", "--help"]) == 0
    assert "--bundle" in capsys.readouterr().out
    assert main([]) == 2 and "a command is required" in capsys.readouterr().err
