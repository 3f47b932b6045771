# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, EnsureTyped

from monai_robust.transforms import ApplyPerturbation, ApplyPerturbationD, ApplyPerturbationd, ApplyPerturbationDict
from tests.utils import TEST_NDARRAYS

G = torch.Generator().manual_seed(0)
X = torch.rand((4, 1, 8, 8), generator=G)
DELTA = (torch.rand((1, 8, 8), generator=G) - 0.5) * 0.1


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_dict_equals_array(to_type):
    img = to_type(X.numpy()) if to_type is np.array else to_type(X)
    out = ApplyPerturbationd(["image", "image2"], DELTA, bounds=(0.0, 1.0))({"image": img, "image2": img, "label": 1})
    expected = ApplyPerturbation(DELTA, bounds=(0.0, 1.0))(img)
    for k in ("image", "image2"):
        assert type(out[k]) is type(img)
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(expected))
    assert out["label"] == 1


def test_per_sample_compose_then_collate():
    items = [{"image": X[i].numpy(), "label": i % 2} for i in range(4)]
    pipeline = Compose([EnsureTyped("image", track_meta=True), ApplyPerturbationd("image", DELTA, bounds=(0.0, 1.0))])
    batch = next(iter(DataLoader(Dataset(items, transform=pipeline), batch_size=4)))
    assert isinstance(batch["image"], MetaTensor) and torch.allclose(batch["image"], (X + DELTA).clamp(0, 1))
    assert batch["image"].meta["perturbation"]["source"] == ["tensor"] * 4
    assert decollate_batch(batch)[2]["image"].meta["perturbation"]["delta_shape"] == "1x8x8"


def test_missing_keys_and_aliases():
    assert ApplyPerturbationD is ApplyPerturbationd and ApplyPerturbationDict is ApplyPerturbationd
    with pytest.raises(KeyError):
        ApplyPerturbationd("image", DELTA)({"other": X})
    assert ApplyPerturbationd("image", DELTA, allow_missing_keys=True)({"other": X})["other"] is X
    with pytest.raises(ValueError, match=r"\(2, 8, 8\).*\(4, 2, 8, 9\)"):
        ApplyPerturbationd("image", torch.zeros(2, 8, 8))({"image": torch.zeros(4, 2, 8, 9)})
