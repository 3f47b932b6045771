# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from monai_robust.data.medmnist import (
    MEDMNIST_INTENSITY,
    download_medmnist,
    medmnist_datalist,
    medmnist_dataset,
    medmnist_tensors,
    read_medmnist,
)

# official split sizes, and the label counts (class 0, class 1) measured in ../shared/data
SHARED = [
    ("pneumoniamnist.npz", "train", 4708, (1, 28, 28), (1214, 3494)),
    ("pneumoniamnist.npz", "val", 524, (1, 28, 28), (135, 389)),
    ("pneumoniamnist.npz", "test", 624, (1, 28, 28), (234, 390)),
    ("adrenalmnist3d.npz", "train", 1188, (1, 28, 28, 28), (929, 259)),
    ("adrenalmnist3d.npz", "val", 98, (1, 28, 28, 28), (76, 22)),
    ("adrenalmnist3d.npz", "test", 298, (1, 28, 28, 28), (229, 69)),
]


@pytest.mark.parametrize("name,split,n,shape,counts", SHARED)
def test_shared_splits(shared_data, name, split, n, shape, counts):
    images, labels = read_medmnist(shared_data / name, split)
    assert images.shape == (n, *shape) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert tuple(np.bincount(labels, minlength=2)) == counts


def test_datalist_values(shared_data):
    path = shared_data / "pneumoniamnist.npz"
    items = medmnist_datalist(path, "test")
    raw = np.load(path)["test_images"]
    assert len(items) == 624 and items[0]["image"].dtype == np.float32 and isinstance(items[0]["label"], int)
    np.testing.assert_allclose(items[5]["image"][0], raw[5] / 255.0, atol=1e-7)
    assert MEDMNIST_INTENSITY.bounds == (0.0, 1.0) and MEDMNIST_INTENSITY.eps_to_model(2.0) == pytest.approx(2 / 255)
    grey = medmnist_datalist(path, "test", scale=False)
    np.testing.assert_array_equal(grey[5]["image"][0], raw[5].astype(np.float32))


def test_dataset_3d_loader(shared_data):
    ds = medmnist_dataset(shared_data / "adrenalmnist3d.npz", "val")
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 1, 28, 28, 28) and batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    raw = np.load(shared_data / "adrenalmnist3d.npz")
    np.testing.assert_allclose(batch["image"][2, 0].numpy(), raw["val_images"][2] / 255.0, atol=1e-6)
    assert batch["label"].tolist() == raw["val_labels"][:4, 0].tolist()


def test_tensors(shared_data):
    path = shared_data / "pneumoniamnist.npz"
    x, y = medmnist_tensors(path, "val", limit=10)
    raw = np.load(path)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0].numpy(), raw["val_images"][:10] / 255.0, atol=1e-7)
    assert y.tolist() == raw["val_labels"][:10, 0].tolist()
    assert medmnist_tensors(path, "test")[0].shape[0] == 624
    with pytest.raises(ValueError, match="limit"):
        medmnist_tensors(path, "test", limit=-1)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_rgb_and_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    multi = rng.integers(0, 2, (5, 14), dtype=np.uint8)
    path = _write(tmp_path / "fake.npz", train_images=rgb, train_labels=multi)
    images, labels = read_medmnist(path, "train")
    assert images.shape == (5, 3, 28, 28) and labels.shape == (5, 14)
    np.testing.assert_array_equal(images[1].transpose(1, 2, 0), rgb[1])  # channel first, same pixels
    items = medmnist_datalist(path, "train")
    np.testing.assert_array_equal(items[2]["label"], multi[2])
    assert items[2]["label"].dtype == np.int64


def test_bad_files(tmp_path):
    ok = np.zeros((3, 28, 28), np.uint8)
    path = _write(tmp_path / "nolabels.npz", train_images=ok)
    with pytest.raises(ValueError, match="missing key 'train_labels'") as err:
        read_medmnist(path, "train")
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="missing key 'val_images'"):
        read_medmnist(path, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        read_medmnist(path, "training")
    short = _write(tmp_path / "short.npz", train_images=ok, train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="3 entries but train_labels has 2"):
        read_medmnist(short, "train")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_medmnist(tmp_path / "junk.npz", "train")
    np.save(tmp_path / "single.npy", ok)
    with pytest.raises(ValueError, match="single array"):
        read_medmnist(tmp_path / "single.npy", "train")
    with pytest.raises(ValueError, match="not found"):
        read_medmnist(tmp_path / "absent.npz", "train")


def test_download_needs_package(tmp_path):
    if importlib.util.find_spec("medmnist") is not None:
        pytest.skip("medmnist is installed; downloads are not exercised in tests")
    with pytest.raises(ImportError, match="medmnist"):
        download_medmnist("pneumoniamnist", tmp_path)
