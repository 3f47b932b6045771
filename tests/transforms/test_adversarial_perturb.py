# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch, list_data_collate
from monai.transforms import Compose, Flipd

from monai_robust.attacks.cw import CW
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from monai_robust.attacks.smia import SMIA
from monai_robust.transforms.array import AdversarialPerturb
from tests.utils import TEST_NDARRAYS, SmallCNN

EPS = 0.03


def _setup(dims: int = 2, n: int = 4):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 3).eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.rand((n, 1) + (10,) * dims, generator=g), torch.arange(n) % 3


def _as(to_type, x: torch.Tensor):
    return to_type(x.numpy()) if to_type is np.array else to_type(x)


@pytest.mark.parametrize("to_type", TEST_NDARRAYS)
@pytest.mark.parametrize("dims", [2, 3])
def test_types_values_and_budget(to_type, dims):
    net, x, y = _setup(dims)
    ref = AdversarialPerturb(PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0))).set_random_state(3)(x, y)
    out = AdversarialPerturb(PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0))).set_random_state(3)(_as(to_type, x), y)
    assert type(out) is type(_as(to_type, x)) and out.dtype == _as(to_type, x).dtype
    out_t = torch.as_tensor(np.asarray(out) if isinstance(out, np.ndarray) else out.as_subclass(torch.Tensor))
    assert torch.allclose(out_t, ref)
    assert bool((lp_norm(out_t - x, "inf") <= EPS + 1e-6).all()) and not torch.equal(out_t, x)


def test_seeded():
    net, x, y = _setup()
    make = lambda: AdversarialPerturb(PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0)))  # noqa: E731
    assert torch.equal(make().set_random_state(5)(x, y), make().set_random_state(5)(x, y))
    assert not torch.equal(make().set_random_state(5)(x, y), make().set_random_state(6)(x, y))
    t = make().set_random_state(5)
    assert not torch.equal(t(x, y), t(x, y))  # a new draw per call
    t.set_random_state(5)
    first = t(x, y)
    assert torch.equal(t(x, y, randomize=False), t(x, y, randomize=False)) and not torch.equal(first, t(x, y))


def test_provenance_collated_batch_and_inverse():
    net, x, y = _setup()
    pre = Compose([Flipd("image", spatial_axis=0)])
    batch = list_data_collate([pre({"image": MetaTensor(x[i]), "label": y[i]}) for i in range(4)])
    clean = batch["image"].clone()
    attack = SMIA(net, EPS, beta=1.0, num_steps=2, bounds=(0.0, 1.0))
    out = AdversarialPerturb(attack).set_random_state(0)(batch["image"], batch["label"])
    rec = out.meta["adversarial"]
    assert rec["attack"] == ["SMIA"] * 4 and rec["eps"] == [EPS] * 4 and rec["lp"] == ["inf"] * 4
    assert rec["num_steps"] == [2] * 4 and rec["beta"] == [1.0] * 4 and rec["seed"] == [attack.last_seed] * 4
    assert rec["targeted"] == [False] * 4 and rec["bounds_high"] == [1.0] * 4
    # the input keeps its own metadata and values
    assert "adversarial" not in batch["image"].meta and torch.equal(batch["image"], clean)
    assert all(len(ops) == 1 for ops in batch["image"].applied_operations)
    samples = decollate_batch({"image": out, "label": batch["label"]})
    for s in samples:
        assert s["image"].meta["adversarial"]["attack"] == "SMIA"
        last = s["image"].applied_operations[-1]
        assert last["class"] == "AdversarialPerturb" and last["extra_info"]["invertible"] is False
    # the spatial transform before the attack can still be inverted; the record that the image is perturbed stays
    inverted = pre.inverse(samples[0])["image"]
    assert [op["class"] for op in inverted.applied_operations] == ["AdversarialPerturb"]


def test_unbatched_metatensor_record():
    net, x, y = _setup()
    out = AdversarialPerturb(PGD(net, EPS, num_steps=1, bounds=(0.0, 1.0)))(MetaTensor(x), y)
    assert out.meta["adversarial"]["attack"] == "PGD" and out.applied_operations[-1]["class"] == "AdversarialPerturb"


class _PerturbingDataset(Dataset):
    """Applies the transform per item and returns what happened (an error crossing the worker boundary would make
    the DataLoader wait 5 s at shutdown)."""

    def __init__(self, transform, x, y):
        super().__init__(list(range(len(y))))
        self.t, self.x, self.y = transform, x, y

    def __getitem__(self, i):
        try:
            return tuple(self.t(self.x[i : i + 1], self.y[i : i + 1]).shape)
        except RuntimeError as e:
            return str(e)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_refuses_dataloader_worker():
    net, x, y = _setup()
    ds = _PerturbingDataset(AdversarialPerturb(PGD(net, EPS, num_steps=1, bounds=(0.0, 1.0))), x, y)
    assert ds[0] == (1, 1, 10, 10)  # fine in the main process
    results = list(DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="fork"))
    assert len(results) == 4
    assert all("must not run in a DataLoader worker" in r and "model on cpu" in r for r in results)


def test_ill_args_and_bad_input():
    net, x, y = _setup()
    with pytest.raises(ValueError, match="Attack"):
        AdversarialPerturb(net)
    with pytest.raises(ValueError, match="outside bounds"):
        AdversarialPerturb(PGD(net, EPS, bounds=(0.0, 1.0)))(x + 2, y)


def test_eps_at_the_call():
    """The transform passes its eps to a bounded attack built without one; the same as the attack built with it."""
    net, x, y = _setup()
    free = AdversarialPerturb(PGD(net, num_steps=2, bounds=(0.0, 1.0)), eps=EPS).set_random_state(3)
    out = free(MetaTensor(x), y)
    ref = AdversarialPerturb(PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0))).set_random_state(3)(MetaTensor(x), y)
    assert torch.equal(out.as_tensor(), ref.as_tensor()) and out.meta["adversarial"]["eps"] == EPS
    assert float(lp_norm(out.as_tensor() - x, "inf").max()) <= EPS + 1e-6
    with pytest.raises(ValueError, match="built without eps"):
        AdversarialPerturb(PGD(net, bounds=(0.0, 1.0)))
    with pytest.raises(ValueError, match="minimisation attack"):
        AdversarialPerturb(CW(net, bounds=(0.0, 1.0)), eps=EPS)
