# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Quantising toward the clean image keeps the budget; PNG and NIfTI round trips through MONAI's loaders are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_robust.bundle.export import quantize_toward, write_stored


def test_quantize_toward_never_grows_the_perturbation():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (2, 3, 8, 8), generator=g).float()
    adv = (clean + (torch.rand(clean.shape, generator=g) * 2 - 1) * 2.5).clamp(0, 255)
    q = quantize_toward(adv, clean)
    assert bool((q == q.round()).all())
    assert bool(((q - clean).abs() <= (adv - clean).abs()).all())
    assert float(q.min()) >= 0 and float(q.max()) <= 255
    with pytest.raises(ValueError, match="integer"):
        quantize_toward(adv, clean + 0.5)


@pytest.mark.parametrize("rgb", [True, False])
def test_png_round_trip(tmp_path, rgb):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (12, 10, 3) if rgb else (12, 10), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image", channel_dim=-1 if rgb else None)])
    x = load({"image": str(tmp_path / "x.png")})["image"]
    x2 = x.clone()
    x2[:, 0, 0] = 255 - x2[:, 0, 0]
    write_stored(x2, tmp_path / "y.png")
    y = load({"image": str(tmp_path / "y.png")})["image"]
    assert torch.equal(y.as_subclass(torch.Tensor), x2.as_subclass(torch.Tensor))


def test_nifti_round_trip_int16(tmp_path):
    import nibabel as nib

    hu = np.random.default_rng(0).integers(-1024, 3000, (9, 7)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "x.nii.gz")
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    x = load({"image": str(tmp_path / "x.nii.gz")})["image"]
    write_stored(x + 3, tmp_path / "y.nii.gz", dtype=np.int16)
    y = load({"image": str(tmp_path / "y.nii.gz")})["image"]
    assert torch.equal(y.as_subclass(torch.Tensor), (x + 3).as_subclass(torch.Tensor))


def test_lossy_or_unfit_refused(tmp_path):
    x = torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match="JPEG is lossy"):
        write_stored(x, tmp_path / "y.jpg")
    with pytest.raises(ValueError, match="quantise"):
        write_stored(x + 0.5, tmp_path / "y.png")
