# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The two foreign zoo bundles, copied as they are, given a tiny dataset in their own input format and trained for
three epochs with their own train config through ``python -m monai.bundle run`` (tiny images through overrides)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE_INFER = {"num_workers": 0}
ENDO_SIZE = 32
ENDO_INFER = {"preprocessing#transforms#2#spatial_size": [ENDO_SIZE, ENDO_SIZE], "dataloader#num_workers": 0}


def shapes_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit grey image of class ``label``: background, circle, triangle or rectangle (the template's task)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [int(rng.integers(size // 6, size // 4))]
    img = rng.normal(40, 8, (size, size))
    mask = {
        0: np.zeros((size, size), bool),
        1: (yy - cy) ** 2 + (xx - cx) ** 2 < r**2,
        2: (yy > cy - r) & (yy < cy + r) & (np.abs(xx - cx) < (yy - (cy - r)) / 2),
        3: (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r // 2 + 1),
    }[label]
    img[mask] = 200
    return np.clip(img, 0, 255).astype(np.uint8)


def endoscopy_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit RGB image: a bright reddish lumen in the middle (in body, 0) or horizontal bars (out of body, 1);
    shapes, not colours, tell them apart, since the bundle z-scores each channel of each image."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 + rng.normal(0, size / 10, 2)
    mask = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size / 4) ** 2) if label == 0 else ((yy // max(size // 8, 1)) % 2 == 0)
    img = np.array([120, 70, 60]) + rng.normal(0, 12, (size, size, 3))
    img[mask] += np.array([90, 60, 40])
    return np.clip(img, 0, 255).astype(np.uint8)


def run_monai_bundle(root: Path, config: str, **overrides) -> None:
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / config)]
    args += ["--bundle_root", str(root)]
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"monai.bundle run {config} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


@pytest.fixture(scope="session")
def template_bundle(shared_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """classification_template trained 3 epochs on 32 (+8 validation) 8-bit PNG shapes of 32 px; its best checkpoint
    copied to models/model.pt, as its README asks."""
    root = tmp_path_factory.mktemp("template") / "classification_template"
    shutil.copytree(shared_bundles / "classification_template", root)
    rng = np.random.default_rng(0)
    items = []
    for split, n in (("train", 40), ("test", 16)):
        out = root / "data" / f"{split}_data"
        out.mkdir(parents=True)
        split_items = []
        for i in range(n):
            label = i % 4
            path = out / f"img{i:03d}.png"
            Image.fromarray(shapes_image(label, 32, rng)).save(path)
            split_items.append({"image": str(path), "label": label})
        (root / "data" / f"{split}_samples.json").write_text(json.dumps(split_items))
        items += split_items
    run_monai_bundle(root, "train.yaml", num_epochs=3, batch_size=4, num_workers=0)
    best = sorted((root / "results").glob("output_*/model_key_metric=*.pt"))
    (root / "models").mkdir(exist_ok=True)
    shutil.copy(best[-1], root / "models" / "model.pt")
    return root


@pytest.fixture(scope="session")
def endoscopic_bundle(shared_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """endoscopic_inbody_classification trained 3 epochs (batches of 4, so BatchNorm statistics settle) on 32 RGB
    JPEGs of 32 px (Resized to 32 px by override); CheckpointSaver writes models/model.pt itself."""
    root = tmp_path_factory.mktemp("endo") / "endoscopic_inbody_classification"
    shutil.copytree(shared_bundles / "endoscopic_inbody_classification", root)
    rng = np.random.default_rng(1)
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        items = []
        for i in range(n):
            label = i % 2
            folder = root / "data" / ("inbody" if label == 0 else "outbody")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{split}{i:03d}.jpg"
            Image.fromarray(endoscopy_image(label, ENDO_SIZE, rng)).save(path, quality=95)
            items.append({"image": str(path), "label": label})
        (root / "label").mkdir(exist_ok=True)
        (root / "label" / f"{split}_samples.json").write_text(json.dumps(items))
    run_monai_bundle(
        root,
        "train.json",
        **{
            "train#deterministic_transforms#3#spatial_size": [ENDO_SIZE, ENDO_SIZE],
            "train#trainer#max_epochs": 3,
            "train#dataloader#batch_size": 4,
            "train#dataloader#num_workers": 0,
            "validate#dataloader#num_workers": 0,
        },
    )
    return root
