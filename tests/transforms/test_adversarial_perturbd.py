# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from monai_robust.attacks.pgd import PGD
from monai_robust.transforms import (
    AdversarialPerturb,
    AdversarialPerturbD,
    AdversarialPerturbd,
    AdversarialPerturbDict,
    ApplyPerturbationd,
)
from tests.utils import TEST_NDARRAYS, SmallCNN

EPS = 0.03


def _setup(n: int = 4):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3).eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.rand((n, 1, 10, 10), generator=g), torch.arange(n) % 3


def _as(to_type, x: torch.Tensor):
    return to_type(x.numpy()) if to_type is np.array else to_type(x)


def _pgd(net):
    return PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0))


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
def test_dict_equals_array(to_type):
    net, x, y = _setup()
    img = _as(to_type, x)
    expected = AdversarialPerturb(_pgd(net)).set_random_state(4)(img, y)
    out = AdversarialPerturbd("image", _pgd(net)).set_random_state(4)({"image": img, "label": y})
    assert type(out["image"]) is type(img)
    np.testing.assert_allclose(np.asarray(out["image"]), np.asarray(expected), rtol=0, atol=0)


def test_new_key_prefix_keeps_clean_and_one_draw_for_all_keys():
    net, x, y = _setup()
    data = {"image": MetaTensor(x.clone()), "image2": MetaTensor(x.clone()), "label": y}
    out = AdversarialPerturbd(["image", "image2"], _pgd(net), new_key_prefix="adv_").set_random_state(0)(data)
    assert torch.equal(out["image"], x) and "adversarial" not in out["image"].meta
    assert not torch.equal(out["adv_image"], x) and out["adv_image"].meta["adversarial"]["attack"] == "PGD"
    assert torch.equal(out["adv_image"], out["adv_image2"])  # same random start for every key
    assert out["adv_image"].meta["adversarial"]["seed"] == out["adv_image2"].meta["adversarial"]["seed"]
    overwritten = AdversarialPerturbd("image", _pgd(net)).set_random_state(0)({"image": x.clone(), "label": y})
    assert torch.equal(overwritten["image"], out["adv_image"]) and set(overwritten) == {"image", "label"}


def test_compose_after_collation():
    net, x, y = _setup(6)
    items = [{"image": MetaTensor(x[i]), "label": y[i]} for i in range(6)]
    batch = next(iter(DataLoader(Dataset(items), batch_size=6)))
    pipeline = Compose(
        [
            AdversarialPerturbd("image", _pgd(net), label_key="label"),
            ApplyPerturbationd("image", torch.full((1, 10, 10), 0.01), bounds=(0.0, 1.0)),
        ]
    )
    out1 = pipeline.set_random_state(9)(dict(batch))
    out2 = pipeline.set_random_state(9)(dict(batch))
    assert torch.equal(out1["image"], out2["image"]) and not torch.equal(out1["image"], batch["image"])
    meta = out1["image"].meta
    assert meta["adversarial"]["attack"] == ["PGD"] * 6 and meta["perturbation"]["delta_linf"][0] == pytest.approx(0.01)
    assert [op["class"] for op in out1["image"].applied_operations[0]] == ["AdversarialPerturb", "ApplyPerturbation"]


def test_errors_and_aliases():
    net, x, y = _setup()
    assert AdversarialPerturbD is AdversarialPerturbd and AdversarialPerturbDict is AdversarialPerturbd
    with pytest.raises(KeyError, match="target"):
        AdversarialPerturbd("image", _pgd(net), label_key="target")({"image": x, "label": y})
    with pytest.raises(ValueError, match="already exist"):
        AdversarialPerturbd("image", _pgd(net), new_key_prefix="adv_")({"image": x, "adv_image": x, "label": y})
    with pytest.raises(ValueError, match="new_key_prefix"):
        AdversarialPerturbd("image", _pgd(net), new_key_prefix="")
    with pytest.raises(KeyError):
        AdversarialPerturbd("missing", _pgd(net))({"image": x, "label": y})
    out = AdversarialPerturbd("missing", _pgd(net), allow_missing_keys=True)({"image": x, "label": y})
    assert torch.equal(out["image"], x)
