# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.data.natural_images import NaturalImageDataset, photo_crops, procedural_textures, sample_photo_paths


def test_natural_image_folder_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        NaturalImageDataset(tmp_path / "missing", 28)
    with pytest.raises(ValueError, match="holds no image"):
        NaturalImageDataset(tmp_path, 28)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    ds = NaturalImageDataset(tmp_path, 28)
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]
    with pytest.raises(ValueError, match="channels"):
        NaturalImageDataset(tmp_path, 28, channels=2)
    with pytest.raises(ValueError, match="broken.png"):
        photo_crops(2, 8, photos=[tmp_path / "broken.png"])


@pytest.mark.parametrize("size", [(16, 16), (8, 8, 8)])
def test_procedural_textures(size):
    t = procedural_textures(4, size, 2, intensity_range=(-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert t.shape == (4, 2) + size and float(t.min()) == pytest.approx(-1.0) and float(t.max()) == pytest.approx(1.0)
    # 1/f^2: low frequencies dominate, so neighbouring pixels are strongly correlated (white noise: ~0)
    white = procedural_textures(4, size, 2, alpha=0.0, generator=torch.Generator().manual_seed(0))
    for img, low, high in ((t, 0.3, 1.0), (white, -0.2, 0.2)):
        a, b = img[..., :-1].flatten(), img[..., 1:].flatten()
        assert low < float(torch.corrcoef(torch.stack([a, b]))[0, 1]) < high
    with pytest.raises(ValueError, match="spatial_size"):
        procedural_textures(2, (16,))


@pytest.mark.skipif(not sample_photo_paths(), reason="matplotlib's sample photo is not installed")
def test_photo_crops():
    c = photo_crops(5, (12, 10), channels=3, intensity_range=(0.0, 2.0), generator=torch.Generator().manual_seed(0))
    assert c.shape == (5, 3, 12, 10) and float(c.min()) >= 0.0 and float(c.max()) <= 2.0 and float(c.std()) > 0.05
