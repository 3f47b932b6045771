# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The input contract's checks: refusals (rank, channels, non-finite, modality) and flags (constant image, values
outside the stored range, 8-bit data into a 12-bit model, another body part); the project's two bundles declare
theirs in metadata.json, and their own phantoms fit it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_robust.bundle.contract import FLAG, REFUSE, InputContract, contract_of
from monai_robust.bundle.loader import load_bundle
from monai_robust.data.datalist import load_datalist, load_image

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.fixture
def cr() -> InputContract:
    return InputContract(channels=1, spatial_dims=2, stored_range=(0, 4095), bits_stored=12, modality=("CR", "DX"))


def _codes(found):
    return {f["code"]: f["severity"] for f in found}


def test_in_contract(cr):
    x = torch.randint(0, 4096, (1, 16, 16)).float()
    assert cr.check(x, "CR") == [] and cr.scan(x[None]) == {}


def test_refusals(cr):
    assert _codes(cr.check(torch.rand(1, 4, 4, 4) * 4000)) == {"spatial_dims": REFUSE}
    assert _codes(cr.check(torch.rand(3, 8, 8) * 4000))["channels"] == REFUSE
    assert _codes(cr.check(torch.full((1, 8, 8), float("nan")))) == {"non_finite": REFUSE}
    assert _codes(cr.check(torch.rand(1, 8, 8) * 4000, "CT")) == {"modality": REFUSE}


def test_flags(cr):
    assert _codes(cr.check(torch.full((1, 8, 8), 5.0))) == {"constant_image": FLAG}
    eight_bit = torch.randint(0, 256, (1, 16, 16)).float()
    assert _codes(cr.check(eight_bit)) == {"low_bit_depth": FLAG}
    assert _codes(cr.check(torch.rand(1, 8, 8) * 5000 - 500)) == {"stored_range": FLAG}
    assert cr.scan(torch.stack([eight_bit, eight_bit])) == {"low_bit_depth": 2}


def test_body_part_is_a_flag():
    chest = InputContract(channels=1, spatial_dims=2, stored_range=(0, 4095), modality=("CR",), body_part="CHEST")
    x = torch.randint(300, 4096, (1, 16, 16)).float()
    assert _codes(chest.check(x, "CR", "HEAD")) == {"body_part": FLAG}
    assert "'HEAD'" in chest.check(x, "CR", "HEAD")[0]["message"]
    assert chest.check(x, "CR", "chest ") == [] and chest.check(x, "CR", None) == []  # case, blanks; missing: unknown
    assert _codes(chest.check(x, "MR", "HEAD")) == {"modality": REFUSE, "body_part": FLAG}


# the embedded phantoms each bundle generates: 2D DICOM CR chest radiographs, 3D NIfTI abdomen CT in HU
PHANTOMS = {
    "robust_xray_classification": ({"num_images": 16, "image_size": 32}, ("CR",), "CHEST", (0.0, 4095.0)),
    "robust_ct_classification": ({"num_images": 16, "image_size": 16}, ("CT",), "ABDOMEN", (-1024.0, 3071.0)),
}


@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_project_bundles_declare_their_contract(name, tmp_path):
    """The contract comes from metadata.json (not the datalist's intensity window: the CT's is [-160, 240] HU), and
    the bundle's own phantoms, as read, fit it: no flag from the declared range, modality or body part."""
    tiny, modality, body_part, stored = PHANTOMS[name]
    declared = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
    declared = declared["network_data_format"]["inputs"]["image"]
    bundle = load_bundle(BUNDLES / name, {"bundle_root": str(tmp_path), **tiny}, weights=False, device="cpu")
    c = contract_of(bundle)
    assert (c.modality, c.body_part, c.stored_range, c.bits_stored, c.channels) == (modality, body_part, stored, 12, 1)
    assert list(c.stored_range) == declared["stored_value_range"] and c.bits_stored == declared["bits_stored"]
    window = bundle.get("intensity_map").physical_range
    assert window[0] >= stored[0] and window[1] <= stored[1]  # the window the model sees lies inside the range
    for item in load_datalist(tmp_path / "data" / "dataset.json", "test"):
        image = load_image(item["image"])
        found = image.meta.get("Modality") or modality[0]  # NIfTI carries no modality
        assert c.check(image, found, image.meta.get("BodyPartExamined")) == [], item["image"]


def test_bad_contract():
    with pytest.raises(ValueError, match="channels"):
        InputContract(channels=0, spatial_dims=2)
    with pytest.raises(ValueError, match="stored_range"):
        InputContract(channels=1, spatial_dims=2, stored_range=(5, 5))
