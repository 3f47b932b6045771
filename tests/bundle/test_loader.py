# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Loading the zoo bundles as published (YAML and JSON), overrides, checkpoint errors and formats."""

from __future__ import annotations

import shutil

import pytest
import torch
from monai.networks.nets import DenseNet121

from monai_robust.bundle.checkpoint import block_record, load_weights, save_hardened
from monai_robust.bundle.contract import contract_of
from monai_robust.bundle.loader import load_bundle


def test_template_yaml(shared_bundles):
    b = load_bundle(shared_bundles / "classification_template", weights=False, device="cpu")
    assert b.config_files[0].name == "inference.yaml"
    assert b.class_names == ["background", "circle", "triangle", "rectangle"]
    assert (b.spatial_dims, b.in_channels, b.preprocessing_id) == (2, 1, "preprocessing")


def test_endoscopic_json_with_override(shared_bundles):
    b = load_bundle(
        shared_bundles / "endoscopic_inbody_classification", {"network_def#in_channels": 1}, weights=False, device="cpu"
    )
    assert b.class_names == ["in body", "out body"]
    assert b.in_channels == 1 and b.network.layer0.conv1.in_channels == 1  # the override reached network_def


@pytest.mark.parametrize(
    "name, config_id", [("classification_template", "ckpt_path"), ("endoscopic_inbody_classification", "checkpointloader#load_path")]
)
def test_missing_checkpoint_names_the_id(shared_bundles, tmp_path, name, config_id):
    shutil.copytree(shared_bundles / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=f"`{config_id}`"):
        load_bundle(tmp_path / name, device="cpu")


def test_contracts_of_foreign_bundles(shared_bundles):
    endo = contract_of(load_bundle(shared_bundles / "endoscopic_inbody_classification", weights=False, device="cpu"))
    assert (endo.channels, endo.stored_range, endo.bits_stored, endo.modality) == (3, (0.0, 255.0), 8, None)
    tmpl = contract_of(load_bundle(shared_bundles / "classification_template", weights=False, device="cpu"))
    assert (tmpl.channels, tmpl.spatial_dims, tmpl.stored_range) == (1, 2, None)  # declared nowhere: inferred later


def test_checkpoint_formats(tmp_path):
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    sd = net.state_dict()
    for i, state in enumerate([sd, {"model": sd}, {f"module.{k}": v for k, v in sd.items()}]):
        torch.save(state, tmp_path / f"{i}.pt")
        fresh = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        assert load_weights(fresh, tmp_path / f"{i}.pt") is None
        assert torch.equal(fresh.state_dict()["class_layers.out.weight"], sd["class_layers.out.weight"])


def test_hardened_checkpoint_with_blocks_round_trip(tmp_path):
    from monai_robust.bundle.checkpoint import insert_recorded_blocks

    original = tmp_path / "model.pt"
    torch.save(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), original)
    record = block_record(["features.denseblock2"], "topk", [1, 1, 32, 32], k=0.3)
    net = insert_recorded_blocks(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), record, 2)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_hardened(net, original, record, original)
    path = save_hardened(net, tmp_path / "model_hardened.pt", record, original)
    fresh = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    assert load_weights(fresh, path, spatial_dims=2) == record
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), net.eval()(x))
