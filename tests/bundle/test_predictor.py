# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``BundlePredictor`` on this project's 2D bundle: the bundle's own preprocessing, guard verdicts, and inputs outside
the input contract (wrong modality, wrong channels, 8-bit data into a 12-bit window, a constant image)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.data.datalist import load_datalist, loading_transforms
from monai_robust.detectors import DetectorGuard


@pytest.fixture(scope="module")
def xray(trained_xray_bundle: tuple[Path, Path, dict]) -> tuple[BundlePredictor, Path]:
    bundle_dir, root, overrides = trained_xray_bundle
    return BundlePredictor(bundle_dir, bundle_root=str(root), device="cpu", **overrides), root


def test_predictor_runs_the_bundles_preprocessing(xray):
    p, root = xray
    assert p.class_names == ["normal", "lesion"] and (p.spatial_dims, p.in_channels) == (2, 1)
    assert isinstance(p.guard, DetectorGuard) and p.guard_units == "model" and not p.network.training
    assert p.contract.stored_range == (0.0, 4095.0) and p.contract.bits_stored == 12
    item = load_datalist(root / "data" / "dataset.json", "test")[0]
    stored = p.load(item)
    model_input = loading_transforms("image", p.intensity_map)(dict(item))["image"]  # the training pipeline
    torch.testing.assert_close(p.model.to_model_units(stored[None])[0], model_input.as_subclass(torch.Tensor).float())
    out = p(stored)
    with torch.no_grad():
        prob = torch.softmax(p.network(model_input[None].as_subclass(torch.Tensor).float()), 1)[0]
    assert out["probabilities"] == pytest.approx(dict(zip(p.class_names, prob.tolist())), abs=1e-5)
    assert out["guard"]["adversarial_suspected"] == (out["guard"]["score"] > out["guard"]["threshold"])
    assert out["contract"] == [] and out["refused"] is False
    assert any("not for clinical use" in s for s in out["statements"])
    assert any("synthetic" in s.lower() for s in out["statements"])


def test_off_contract_inputs(xray, shared_data, tmp_path):
    p, _ = xray
    # wrong modality (a CT slice into a CR model): refused, no class
    ct = p.predict_files([shared_data / "dicom" / "693_UNCR.dcm"])[0]
    assert ct["refused"] and ct["predicted_class"] is None and ct["contract"][0]["code"] == "modality"
    # wrong channel count (RGB ultrasound): refused before any forward pass
    us = p.predict_files([shared_data / "dicom" / "US1_UNCR.dcm"])[0]
    assert us["refused"] and {"modality", "channels"} <= {f["code"] for f in us["contract"]}
    # an 8-bit PNG into the 12-bit window: scored but flagged
    png = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(png)
    low = p.predict_files([png])[0]
    assert not low["refused"] and low["predicted_class"] in p.class_names
    assert [f["code"] for f in low["contract"]] == ["low_bit_depth"]
    # a constant image: flagged
    flat = p(np.full((1, 32, 32), 1000.0))
    assert [f["code"] for f in flat["contract"]] == ["constant_image"]
    with pytest.raises(ValueError, match="NaN"):
        p.preprocess(np.full((1, 32, 32), np.nan))
    with pytest.raises(ValueError, match="3 channel"):
        p.preprocess(np.zeros((3, 32, 32)))


def test_predictor_loads_the_bundles_own_hardened_checkpoint(trained_xray_bundle, tmp_path):
    """The bundle's own harden.json (train -> harden, tiny) writes models/model_hardened.pt with the record of its
    sparsity blocks; BundlePredictor (hardened=True, the default) loads exactly those weights into the inference
    config's plain network_def, blocks inserted, and hardened=False the original."""
    from tests.utils import run_bundle

    bundle_dir, root, overrides = trained_xray_bundle
    work = tmp_path / "run"
    shutil.copytree(root, work)  # model.pt, guard.pt and the phantoms of the session's tiny bundle
    run_bundle(bundle_dir, ["train.json", "harden.json"], work, num_epochs=1, harden_epochs=1, **overrides)
    saved = torch.load(work / "models" / "model_hardened.pt", map_location="cpu", weights_only=True)
    assert set(saved) == {"model", "blocks"} and saved["blocks"]["after"] == ["features.transition1", "features.transition2"]
    assert saved["blocks"]["block"] == "topk" and saved["blocks"]["kwargs"] == {"k": 0.5}

    p = BundlePredictor(bundle_dir, bundle_root=str(work), device="cpu", guard=False, **overrides)
    assert p.bundle.checkpoint.name == "model_hardened.pt" and p.bundle.blocks == saved["blocks"]
    state = p.network.state_dict()
    assert state.keys() == saved["model"].keys()
    assert all(torch.equal(state[k].cpu(), v) for k, v in saved["model"].items())
    original = torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not torch.equal(state["class_layers.out.weight"].cpu(), original["class_layers.out.weight"])
    plain = BundlePredictor(bundle_dir, bundle_root=str(work), device="cpu", guard=False, hardened=False, **overrides)
    assert plain.bundle.checkpoint.name == "model.pt" and plain.bundle.blocks is None
    assert torch.equal(plain.network.state_dict()["class_layers.out.weight"], original["class_layers.out.weight"])
    x = p.load(load_datalist(work / "data" / "dataset.json", "test")[0])[None]
    assert p.predict(x)[0]["contract"] == []  # the hardened network takes the same inputs


def test_hardened_checkpoint_without_its_record_is_an_error(trained_xray_bundle, tmp_path):
    """A hardened checkpoint that does not fit network_def (e.g. written without its block record) is named, never
    silently replaced by the original."""
    from monai.networks.nets import DenseNet121

    from monai_robust.bundle.checkpoint import block_record, insert_recorded_blocks

    bundle_dir, root, overrides = trained_xray_bundle
    work = tmp_path / "run"
    shutil.copytree(root, work)
    record = block_record(["features.transition1"], "topk", [1, 1, 32, 32], k=0.5)
    blocked = insert_recorded_blocks(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), record, 2)
    torch.save(blocked.state_dict(), work / "models" / "model_hardened.pt")  # the weights only, no record
    with pytest.raises(RuntimeError, match=r"(?s)model_hardened\.pt.*do not fit.*rerun the harden stage.*hardened=False"):
        BundlePredictor(bundle_dir, bundle_root=str(work), device="cpu", guard=False, **overrides)
    p = BundlePredictor(bundle_dir, bundle_root=str(work), device="cpu", guard=False, hardened=False, **overrides)
    assert p.bundle.checkpoint.name == "model.pt"


def test_predictor_without_guard_or_checkpoint(trained_xray_bundle, tmp_path):
    bundle_dir, root, overrides = trained_xray_bundle
    with pytest.raises(FileNotFoundError, match="ckpt_file"):
        BundlePredictor(bundle_dir, bundle_root=str(tmp_path), device="cpu", **overrides)
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("guard.pt"))
    p = BundlePredictor(bundle_dir, bundle_root=str(bare), device="cpu", **overrides)
    assert p.guard is None and p(np.full((1, 32, 32), 1000.0))["guard"] is None


def test_cli_on_this_projects_bundle(trained_xray_bundle, tmp_path, capsys):
    """The project's own bundle goes through the same path (decathlon datalist, bundle_root override)."""
    import json

    from monai_robust.bundle.cli import main

    bundle_dir, root, overrides = trained_xray_bundle
    flags = [f"--{k}={json.dumps(v)}" for k, v in {**overrides, "bundle_root": str(root)}.items()]
    args = ["--bundle", str(bundle_dir), str(root / "data" / "dataset.json"), "--split", "test", *flags]
    capsys.readouterr()
    assert main(["evaluate", *args, "--eps", "40", "--suite", "quick", "--device", "cpu", "--quiet", "--output", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threat_model"]["bounds"] == [0.0, 4095.0] and out["threat_model"]["eps"] == [40.0]
    assert [s["transform"] for s in out["threat_model"]["intensity_part"]] == ["ScaleIntensityRanged", "EnsureTyped"]
    assert out["summary"]["clean"]["n"] == len(load_datalist(root / "data" / "dataset.json", "test"))
    assert any("not for clinical use" in s for s in out["statements"])
    assert (tmp_path / "evaluation.json").is_file()


def test_screening_sr_carries_the_statements(xray):
    """DICOM screening with the predictor: the SR and the JSON summary carry the metadata's statements."""
    from monai_robust.integrations.dicom.screener import DicomScreener

    p, root = xray
    files = [Path(i["image"]) for i in load_datalist(root / "data" / "dataset.json", "test")[:2]]
    results = [r for r in DicomScreener(p).screen_files(files) if r.status == "screened"]
    assert results
    for res in results:
        texts = [item.TextValue for item in res.sr.ContentSequence if item.ValueType == "TEXT"]
        assert any("not for clinical use" in t for t in texts) and any("synthetic" in t.lower() for t in texts)
        assert res.summary["statements"] == p.statements and res.summary["images_refused"] == 0
