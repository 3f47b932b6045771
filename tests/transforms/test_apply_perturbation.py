# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_robust.transforms.array import ApplyPerturbation
from tests.utils import TEST_NDARRAYS

G = torch.Generator().manual_seed(0)
X2 = torch.rand((3, 1, 8, 8), generator=G)
X3 = torch.rand((2, 2, 6, 6, 6), generator=G)
D2 = (torch.rand((1, 8, 8), generator=G) - 0.5) * 0.2
D3 = (torch.rand((2, 6, 6, 6), generator=G) - 0.5) * 0.2

# (image, delta, delta as (C, *spatial)): delta (C, *spatial) or (1, C, *spatial), on a batch or a single image
CASES = [
    (img, delta, d) for x, d in ((X2, D2), (X3, D3)) for img in (x, x[0]) for delta in (d, d[None])
]


def _as(to_type, x: torch.Tensor):
    return to_type(x.numpy()) if to_type is np.array else to_type(x)


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
@pytest.mark.parametrize("img,delta,delta_c", CASES)
def test_values_types_and_broadcast(to_type, img, delta, delta_c):
    out = ApplyPerturbation(_as(to_type, delta), bounds=(0.0, 1.0))(_as(to_type, img))
    assert type(out) is type(_as(to_type, img)) and tuple(out.shape) == tuple(img.shape)
    np.testing.assert_allclose(np.asarray(out), (img + delta_c).clamp(0, 1).numpy(), atol=1e-7)


def test_no_bounds_no_clipping_and_provenance(tmp_path):
    path = tmp_path / "uap.pt"
    torch.save({"delta": D2 * 10, "zeta": 0.04}, path)
    out = ApplyPerturbation(str(path))(MetaTensor(X2))
    assert float(out.max()) > 1.0 and float(out.min()) < 0.0  # bounds=None: never a silent [0, 1]
    rec = out.meta["perturbation"]
    assert rec["source"] == str(path) and rec["delta_shape"] == "1x8x8"
    assert rec["delta_linf"] == pytest.approx(float((D2 * 10).abs().max()), rel=1e-6)
    assert rec["delta_l2"] == pytest.approx(float((D2 * 10).norm()), rel=1e-6)
    torch.save(D2, tmp_path / "plain.pt")
    assert torch.allclose(ApplyPerturbation(tmp_path / "plain.pt")(X2), X2 + D2)


@pytest.mark.parametrize(
    "img,delta",
    [(X2, torch.zeros(1, 7, 7)), (X2, torch.zeros(3, 8, 8)), (X3, torch.zeros(2, 6, 6)), (X2[0], torch.zeros(2, 1, 8, 8))],
)
def test_bad_shapes_name_both(img, delta):
    with pytest.raises(ValueError, match=rf"{tuple(delta.shape)}.*{tuple(img.shape)}".replace("(", r"\(").replace(")", r"\)")):
        ApplyPerturbation(delta)(img)


def test_bad_delta_and_image(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ApplyPerturbation(tmp_path / "nope.pt")
    torch.save({"other": D2}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="delta"):
        ApplyPerturbation(tmp_path / "bad.pt")
    nan = D2.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ApplyPerturbation(nan)
    with pytest.raises(ValueError, match="shape"):
        ApplyPerturbation(torch.zeros(8))
    with pytest.raises(ValueError, match="bounds"):
        ApplyPerturbation(D2, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="floating"):
        ApplyPerturbation(D2)(torch.zeros((3, 1, 8, 8), dtype=torch.uint8))
