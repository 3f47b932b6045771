# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_robust.data.batches import as_batches, as_image_batch, image_label, iter_image_batches, split_batch


def test_as_batches_forms():
    x = torch.rand(5, 1, 4, 4)
    assert [b.shape[0] for b in as_batches(x, chunk=2)] == [2, 2, 1]
    assert len(as_batches([(x, 0), (x, 1)])) == 2
    assert len(as_batches([{"image": x}])) == 1
    assert as_batches(x.numpy().astype(np.uint8))[0].dtype == torch.float32
    with pytest.raises(ValueError, match="'image'"):
        as_batches([{"img": x}])
    with pytest.raises(ValueError, match="NaN"):
        as_batches(torch.full((2, 1, 4, 4), float("nan")))


def test_split_batch_forms():
    x = torch.rand(3, 1, 4, 4)
    for batch in ({"image": x, "label": torch.tensor([[0], [1], [2]])}, (x, [0, 1, 2]), [x, np.array([0, 1, 2])]):
        xb, yb = split_batch(batch)
        assert xb is x and yb.tolist() == [0, 1, 2]
    assert split_batch(x)[1] is None and split_batch({"image": x})[1] is None
    with pytest.raises(ValueError, match="labels of shape"):
        split_batch((x, [0, 1]), "my batch")
    with pytest.raises(ValueError, match="my batch: images must be"):
        split_batch(torch.zeros(3, 4), "my batch")
    with pytest.raises(ValueError, match="empty"):
        split_batch(())


def test_image_label_device_and_types():
    x, y = image_label({"image": np.zeros((2, 1, 4, 4), np.uint8), "label": [[0], [1]]}, "cpu")
    assert x.dtype == torch.float32 and y.dtype == torch.long and y.shape == (2,)
    assert image_label(torch.zeros(2, 1, 4, 4), torch.device("cpu"))[1] is None


def test_iter_image_batches_tensor_loader_and_shuffle():
    x, y = torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10)
    assert [b.shape[0] for b, _ in iter_image_batches({"image": x}, 4)] == [4, 4, 2]
    shuffled = [(b, lab) for b, lab in iter_image_batches({"image": x, "label": y}, 3, torch.Generator().manual_seed(0))]
    assert all(torch.equal(b.reshape(-1).long(), lab) for b, lab in shuffled)  # images and labels stay paired
    assert sorted(torch.cat([lab for _, lab in shuffled]).tolist()) == list(range(10))
    assert torch.cat([lab for _, lab in shuffled]).tolist() != list(range(10))
    loader = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(10)]), batch_size=5)
    assert [lab.tolist() for _, lab in iter_image_batches(loader)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(ValueError, match="source must be"):
        list(iter_image_batches("folder/"))
    with pytest.raises(ValueError, match="batch 1 of the source"):
        list(iter_image_batches([x, torch.zeros(2)]))


def test_as_image_batch_finite():
    assert as_image_batch(torch.full((1, 1, 2, 2), float("inf"))).isinf().all()  # not checked by default
    with pytest.raises(ValueError, match="NaN/Inf"):
        as_image_batch(torch.full((1, 1, 2, 2), float("inf")), finite=True)
