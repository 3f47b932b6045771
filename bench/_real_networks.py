# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Real networks and tasks for ``bench/evaluation.py``: MONAI DenseNet121-2D on PneumoniaMNIST resized to 64x64 and
DenseNet121-3D on AdrenalMNIST3D resized to 32^3, each on the 4-class rotation task (which multiple of 90 degrees an
image was rotated by), so that torchattacks' standard ``AutoAttack`` (whose targeted DLR needs >= 4 classes) runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from torch import nn

__all__ = ["NETWORKS", "build_task", "load_split", "torchattacks_autoattack"]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NETWORKS = {"densenet2d": ("pneumoniamnist.npz", 2, 64), "densenet3d": ("adrenalmnist3d.npz", 3, 32)}
CLASSES = 4


def _rotate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image rotated by ``i * 90`` degrees in its first two spatial axes, ``i = index mod 4`` (the label)."""
    y = torch.arange(x.shape[0]) % CLASSES
    out = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(x, y)])
    return out, y


def load_split(kind: str, split: str, n: int | None = None, data_dir: Path = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``split`` (``train``, ``val``, ``test``) for network ``kind`` of :data:`NETWORKS`,
    resized and rotated: images in [0, 1] ``(N, 1, *size)`` and rotation labels ``(N,)``."""
    file, dims, size = NETWORKS[kind]
    return _load(data_dir / file, split, n, dims, size)


def _load(path: Path, split: str, n: int | None, dims: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as f:
        x = torch.from_numpy(f[f"{split}_images"][:n]).float().div(255).unsqueeze(1)
    mode = "bilinear" if dims == 2 else "trilinear"
    x = F.interpolate(x, size=(size,) * dims, mode=mode, align_corners=False).clamp(0, 1)
    return _rotate(x)


def build_task(kind: str, n_train: int, n_test: int, epochs: int, seed: int, data_dir: Path = DATA) -> dict[str, Any]:
    """Trains DenseNet121 (``kind`` in :data:`NETWORKS`) on the rotation task; returns the net and the test set."""
    file, dims, size = NETWORKS[kind]
    x, y = _load(data_dir / file, "train", n_train, dims, size)
    torch.manual_seed(seed)
    net = DenseNet121(spatial_dims=dims, in_channels=1, out_channels=CLASSES)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    xt, yt = _load(data_dir / file, "test", n_test, dims, size)
    return {"net": net.eval(), "test_x": xt, "test_y": yt, "description": f"MONAI DenseNet121-{dims}D, {size}^{dims}, "
            f"{file[:-4]} rotation task ({CLASSES} classes), trained {epochs} epochs on {x.shape[0]} images"}


def torchattacks_autoattack(net: nn.Module, eps: float, steps: int, queries: int, seed: int) -> Any:
    """torchattacks' standard AutoAttack with ``steps`` iterations and ``queries`` Square queries: the helper of
    ``bench/autoattack.py`` (loaded by path: a module named ``autoattack`` could shadow it)."""
    spec = importlib.util.spec_from_file_location("_bench_autoattack", Path(__file__).with_name("autoattack.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.peers("rotation", net, eps, "Linf", CLASSES, steps, queries, seed)
