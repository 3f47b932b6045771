# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The input contract's checks: refusals (rank, channels, non-finite, modality) and flags (constant image, values
outside the stored range, 8-bit data into a 12-bit model)."""

from __future__ import annotations

import pytest
import torch

from monai_robust.bundle.contract import FLAG, REFUSE, InputContract


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


def test_bad_contract():
    with pytest.raises(ValueError, match="channels"):
        InputContract(channels=0, spatial_dims=2)
    with pytest.raises(ValueError, match="stored_range"):
        InputContract(channels=1, spatial_dims=2, stored_range=(5, 5))
