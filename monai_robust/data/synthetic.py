# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Deterministic two-class phantom datasets written as real files: 2D chest-radiograph-like DICOM, 3D CT-like NIfTI.

Class 1 ("lesion") holds one small, low-contrast blob (a nodule in a lung field in 2D, a hypodense lesion in a
liver-like organ in 3D) of random position, size and contrast; class 0 ("normal") holds none. The background is
textured (correlated noise on anatomy, random exposure), so the class is decided by a local structure and not
by global intensity, and the faintest lesions are about as strong as the texture. Image ``i`` is a function of
the seed, the parameters and ``i`` only (not of the number of images), so the same call gives byte-identical
files. Measured difficulty (default 2D set, ``tests.utils.SmallCNN``, Adam 3e-3, batch 64, one CPU thread):
test accuracy 67 % after 10 epochs, 79 % after 40, 84 % after 80.

Run ``python -m monai_robust.data.synthetic --out DIR --spatial-dims 2`` to write a dataset and print a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_robust.data.datalist import write_datalist
from monai_robust.utils.intensity import LinearIntensityMap

__all__ = [
    "PHANTOM_CLASSES",
    "chest_radiograph_phantom",
    "ct_phantom",
    "generate_phantom_dataset",
    "main",
    "phantom_intensity_map",
]

PHANTOM_CLASSES = ("normal", "lesion")
FORMAT_VERSION = 1  # bump when the images of a given (seed, parameters) change
# defaults per spatial rank; lesion radius is a fraction of ``size``, contrast in stored values (2D) / HU (3D)
_DEFAULTS: dict[int, dict[str, Any]] = {
    2: {"num_images": 2000, "size": 32, "lesion_radius": (0.08, 0.13), "lesion_contrast": (300.0, 1600.0)},
    3: {"num_images": 400, "size": 32, "lesion_radius": (0.12, 0.2), "lesion_contrast": (60.0, 200.0)},
}
_XRAY_MAX = 4095  # 12-bit stored values
_CT_WINDOW = (-160.0, 240.0)  # abdomen window (level 40 HU, width 400 HU)


def phantom_intensity_map(spatial_dims: int) -> LinearIntensityMap:
    """The raw -> model map of a phantom set: stored values ``[0, 4095] -> [0, 1]`` (2D X-ray) or the abdomen
    window ``[-160, 240] HU -> [0, 1]`` (3D CT).

    Raises:
        ValueError: When ``spatial_dims`` is not 2 or 3.
    """
    if spatial_dims == 2:
        return LinearIntensityMap.from_window(0.0, float(_XRAY_MAX), units="stored value")
    if spatial_dims == 3:
        return LinearIntensityMap.from_window(*_CT_WINDOW, units="HU")
    raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={spatial_dims!r}.")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-pass filtered with a Gaussian of ``sigma`` voxels (FFT, periodic)."""
    white = rng.standard_normal(shape)
    f2 = sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij"))
    out = np.real(np.fft.ifftn(np.fft.fftn(white) * np.exp(-2 * np.pi**2 * sigma**2 * f2)))
    return out / max(float(out.std()), 1e-12)


def _inside(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d > 0`` (a logistic edge ``width`` wide, in the units of ``d``)."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / width, -50, 50)))


def chest_radiograph_phantom(
    rng: np.random.Generator,
    size: int = 32,
    lesion: bool = False,
    radius: tuple[float, float] = (0.08, 0.13),
    contrast: tuple[float, float] = (300.0, 1600.0),
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """One 2D chest-radiograph-like image in 12-bit stored values (MONOCHROME2: higher is brighter).

    Two dark lung fields in a bright thorax with a spine and ribs, correlated texture, random exposure; with
    ``lesion`` a Gaussian nodule inside a lung field.

    Args:
        rng: the random generator (the image is a function of its state).
        size: rows = columns, in pixels.
        lesion: add a nodule.
        radius: range of the nodule's Gaussian sigma, as a fraction of ``size``.
        contrast: range of the nodule's peak amplitude, in stored values (the texture's std is about 230, the
            lung-to-thorax step about 1000).

    Returns:
        ``(uint16 array (rows, cols), lesion record or None)``; the record holds ``center`` (row, col, pixels),
        ``sigma`` (pixels) and ``amplitude`` (stored values).
    """
    g = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(g, g, indexing="ij")  # (rows, cols) in [-1, 1]

    def jit(scale: float) -> float:
        return 1.0 + scale * float(rng.uniform(-1, 1))

    w = 0.05
    body = _inside(1 - np.sqrt((x / (0.88 * jit(0.05))) ** 2 + ((y - 0.05) / (0.97 * jit(0.03))) ** 2), w)
    lungs, fields = np.zeros_like(x), []
    for side in (-1, 1):
        cx, cy, rx, ry = side * 0.4 * jit(0.08), -0.05 * jit(0.5), 0.27 * jit(0.1), 0.55 * jit(0.08)
        lungs = np.maximum(lungs, _inside(1 - np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2), w))
        fields.append((cx, cy, rx, ry))
    spine = _inside(0.11 * jit(0.1) - np.abs(x - 0.02 * float(rng.uniform(-1, 1))), w) * body
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (y - 0.35 * x**2) * 4.5 * jit(0.1) + float(rng.uniform(0, 2 * np.pi)))
    img = 300 + 1900 * body - 1000 * lungs + 900 * spine + 300 * ribs * body
    img += (180 * _smooth_noise(rng, x.shape, 0.025 * size) + 140 * _smooth_noise(rng, x.shape, 0.06 * size)) * body
    # the lesion is drawn for every image and added only with ``lesion``: both classes share the random stream,
    # so an image with a lesion is exactly its lesion-free twin plus the nodule (before exposure and noise)
    cx, cy, rx, ry = fields[int(rng.integers(2))]
    t, r = float(rng.uniform(0, 2 * np.pi)), 0.7 * float(np.sqrt(rng.uniform()))
    ci, cj = ((cy + r * ry * np.sin(t)) + 1) / 2 * size - 0.5, ((cx + r * rx * np.cos(t)) + 1) / 2 * size - 0.5
    sigma, amp = float(rng.uniform(*radius) * size), float(rng.uniform(*contrast))
    record = None
    if lesion:
        ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        img += amp * np.exp(-((ii - ci) ** 2 + (jj - cj) ** 2) / (2 * sigma**2))
        record = {"center": [round(ci, 3), round(cj, 3)], "sigma": round(sigma, 3), "amplitude": round(amp, 3)}
    img = img * jit(0.08) + 120 * float(rng.uniform(-1, 1)) + 50 * rng.standard_normal(img.shape)
    return np.clip(np.rint(img), 0, _XRAY_MAX).astype(np.uint16), record


def ct_phantom(
    rng: np.random.Generator,
    size: int = 32,
    lesion: bool = False,
    radius: tuple[float, float] = (0.12, 0.2),
    contrast: tuple[float, float] = (60.0, 200.0),
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """One 3D CT-like abdomen volume in HU, axes ``(x, y, z)`` (``size`` voxels each).

    Air, a fat-rimmed elliptic body, a liver-like organ, a spine and two vessels, correlated texture and CT
    noise; with ``lesion`` a hypodense sphere inside the liver.

    Args:
        rng: the random generator.
        size: voxels per axis.
        lesion: add a lesion.
        radius: range of the lesion radius, as a fraction of ``size``.
        contrast: range of the lesion's HU drop below the liver (texture std about 20 HU, noise 12 HU).

    Returns:
        ``(int16 array (x, y, z) in HU, lesion record or None)``; the record holds ``center`` (voxels),
        ``radius`` (voxels) and ``amplitude`` (HU drop).
    """
    g = (np.arange(size) + 0.5) / size * 2 - 1
    x, y, z = np.meshgrid(g, g, g, indexing="ij")

    def jit(scale: float) -> float:
        return 1.0 + scale * float(rng.uniform(-1, 1))

    w = 0.04
    ax, ay = 0.9 * jit(0.05), 0.7 * jit(0.05)
    body = _inside(1 - np.sqrt((x / ax) ** 2 + (y / ay) ** 2), w)
    inner = _inside(1 - np.sqrt((x / (ax - 0.08)) ** 2 + (y / (ay - 0.08)) ** 2), w)
    lc = np.array([-0.35 * jit(0.15), -0.1 * jit(0.3), 0.0 + 0.1 * float(rng.uniform(-1, 1))])
    lr = np.array([0.38 * jit(0.1), 0.4 * jit(0.1), 0.75 * jit(0.1)])
    liver_d = 1 - np.sqrt(((x - lc[0]) / lr[0]) ** 2 + ((y - lc[1]) / lr[1]) ** 2 + ((z - lc[2]) / lr[2]) ** 2)
    liver = _inside(liver_d, w) * inner
    spine = _inside(0.13 - np.sqrt(x**2 + (y - 0.45 * jit(0.05)) ** 2), w) * inner
    vessels = sum(_inside(0.06 - np.sqrt((x - cx) ** 2 + (y - cy) ** 2), w) for cx, cy in ((0.1, 0.2), (-0.05, 0.25)))
    hu = -1000 + 900 * body + 140 * inner + 20 * liver + 360 * spine + 110 * vessels * inner * (1 - spine)
    hu += (18 * _smooth_noise(rng, x.shape, 0.04 * size) + 10 * _smooth_noise(rng, x.shape, 0.1 * size)) * body
    while True:  # a point well inside the liver (rejection sampling); drawn for both classes, as in 2D
        p = lc + lr * rng.uniform(-0.6, 0.6, 3)
        if np.sum(((p - lc) / lr) ** 2) < 0.36:
            break
    r, amp = float(rng.uniform(*radius) * size), float(rng.uniform(*contrast))
    record = None
    if lesion:
        c = (p + 1) / 2 * size - 0.5
        ii, jj, kk = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
        hu -= amp * _inside(r - np.sqrt((ii - c[0]) ** 2 + (jj - c[1]) ** 2 + (kk - c[2]) ** 2), 0.5)
        record = {"center": [round(float(v), 3) for v in c], "radius": round(r, 3), "amplitude": round(amp, 3)}
    hu = hu + 15 * float(rng.uniform(-1, 1)) + 12 * rng.standard_normal(hu.shape)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), record


def _uid(seed: int, *parts: Any) -> str:
    import pydicom.uid

    return str(pydicom.uid.generate_uid(entropy_srcs=["monai_robust.phantom", str(seed), *map(str, parts)]))


def _dicom_template(size: int, seed: int, spacing_mm: float) -> Any:
    """The attributes shared by all images of a 2D set: Computed Radiography Image Storage, Explicit VR Little
    Endian, 12 bits stored in 16, MONOCHROME2, rescale slope 1 / intercept 0 (stored value = physical value)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.Manufacturer = "monai_robust synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic chest radiograph phantom"
    ds.SeriesDescription = f"phantom seed {seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic image, no patient data"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    return ds


def _write_dicom(path: Path, template: Any, pixels: np.ndarray, index: int, seed: int) -> None:
    """Writes ``template`` with this image's UIDs, pseudonymous patient and pixels (the template is reused)."""
    ds = template
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, "sop", index)
    ds.StudyInstanceUID = _uid(seed, "study", index)
    ds.SeriesInstanceUID = _uid(seed, "series", index)
    pid = hashlib.sha256(f"monai_robust-phantom-{seed}-{index}".encode()).hexdigest()[:12].upper()
    ds.PatientName = f"PHANTOM^{pid}"
    ds.PatientID = f"PH{pid}"  # pseudonymous: a hash of (seed, index), no real patient
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_nifti(path: Path, hu: np.ndarray, spacing_mm: float) -> None:
    """An int16 NIfTI-1 volume in HU, RAS+ affine with ``spacing_mm`` voxels centred on the origin."""
    import nibabel as nib

    n = np.asarray(hu.shape)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * spacing_mm
    img = nib.Nifti1Image(hu.astype(np.int16), affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"monai_robust synthetic CT phantom, HU"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def _check_args(params: dict[str, Any]) -> None:
    num_images, size, seed, splits = params["num_images"], params["size"], params["seed"], params["splits"]
    if not isinstance(num_images, int) or num_images < 6:
        raise ValueError(f"num_images must be an integer >= 6 (two per split), got num_images={num_images!r}.")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer >= 16 pixels, got size={size!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={seed!r}.")
    if len(splits) != 3 or min(splits) <= 0 or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(f"splits must be three positive fractions summing to 1, got splits={list(splits)!r}.")
    for key, upper in (("lesion_radius", 0.5), ("lesion_contrast", float("inf"))):
        bounds = params[key]
        if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1] <= upper:
            raise ValueError(f"{key} must be a range 0 <= low <= high (<= {upper}), got {key}={params[key]!r}.")


def generate_phantom_dataset(
    root: str | Path,
    spatial_dims: int = 2,
    num_images: int | None = None,
    size: int | None = None,
    seed: int = 0,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    lesion_radius: Sequence[float] | None = None,
    lesion_contrast: Sequence[float] | None = None,
) -> Path:
    """Writes a two-class phantom dataset (2D: DICOM CR files, 3D: NIfTI HU volumes) and its datalist.

    Image ``i`` has label ``i % 2`` and depends on ``(seed, spatial_dims, size, i)`` only; the first
    ``splits[0]`` of the images are ``training``, the next ``splits[1]`` ``validation``, the rest ``test``.
    ``root/dataset.json`` is MONAI's decathlon-style datalist with ``classes``, ``intensity_map``, the generator
    parameters and the lesion of each positive image (``lesions``, keyed by image path). Files are written to a
    temporary sibling folder and moved into place, so ``root`` never holds half a dataset.

    Args:
        root: output folder: absent, empty, or holding this same dataset (then nothing is written).
        spatial_dims: 2 (chest-radiograph-like DICOM) or 3 (CT-like NIfTI).
        num_images: number of images (default 2000 in 2D, 400 in 3D).
        size: pixels per side (default 32).
        seed: non-negative integer seed.
        splits: fractions for training, validation, test.
        lesion_radius: ``(low, high)`` lesion size as a fraction of ``size``: 2D Gaussian sigma (default
            ``(0.08, 0.13)``), 3D sphere radius (default ``(0.12, 0.2)``).
        lesion_contrast: ``(low, high)`` lesion amplitude, stored values in 2D (default ``(300, 1600)``), HU
            below the liver in 3D (default ``(60, 200)``); lower values make the set harder.

    Returns:
        The path of ``root/dataset.json``.

    Raises:
        ValueError: When an argument is invalid, or ``root`` holds anything other than a complete dataset with
            exactly these parameters (nothing is overwritten).

    Example::

        >>> datalist = generate_phantom_dataset("phantoms2d", spatial_dims=2, num_images=200, seed=0)  # < 1 s
        >>> from monai_robust.data.datalist import load_datalist
        >>> len(load_datalist(datalist, "training"))
        140
    """
    if spatial_dims not in _DEFAULTS:
        raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={spatial_dims!r}.")
    given = {"num_images": num_images, "size": size, "lesion_radius": lesion_radius, "lesion_contrast": lesion_contrast}
    chosen = {k: (_DEFAULTS[spatial_dims][k] if v is None else v) for k, v in given.items()}
    params = {
        "format_version": FORMAT_VERSION,
        "spatial_dims": spatial_dims,
        "num_images": chosen["num_images"],
        "size": chosen["size"],
        "seed": seed,
        "splits": [float(v) for v in splits],
        "lesion_radius": [float(v) for v in chosen["lesion_radius"]],
        "lesion_contrast": [float(v) for v in chosen["lesion_contrast"]],
    }
    _check_args(params)
    root = Path(root)
    datalist = root / "dataset.json"
    if datalist.is_file():
        return _existing(datalist, params)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty folder (and has no dataset.json); not overwriting it.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        _write_dataset(tmp, params)
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if datalist.is_file():  # another process wrote the dataset first: accept it only if it is the same one
            return _existing(datalist, params)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return datalist


def _existing(datalist: Path, params: dict[str, Any]) -> Path:
    """``datalist`` when it records exactly ``params`` and all its files exist; raises otherwise."""
    root = datalist.parent
    try:
        record = json.loads(datalist.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{datalist}: exists but is not valid JSON ({e}); not overwriting {root}.") from e
    found = record.get("generator", {}).get("params")
    if found != params:
        raise ValueError(f"{root} holds a different dataset (parameters {found}); requested {params}. Use another folder or delete it.")
    missing = [it["image"] for split in ("training", "validation", "test") for it in record[split] if not (root / it["image"]).is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} file(s) listed in dataset.json are missing (e.g. {missing[0]}); delete the folder and regenerate.")
    return datalist


def _write_dataset(out: Path, params: dict[str, Any]) -> None:
    """Writes the images and ``dataset.json`` of a phantom set into ``out``."""
    dims, n, size, seed = params["spatial_dims"], params["num_images"], params["size"], params["seed"]
    (out / "images").mkdir()
    n_train = int(round(params["splits"][0] * n))
    n_val = int(round(params["splits"][1] * n))
    fov_mm = 350.0 if dims == 2 else 320.0
    spacing = fov_mm / size
    items, lesions = [], {}
    template = _dicom_template(size, seed, spacing) if dims == 2 else None
    for i in range(n):
        label = i % 2
        rng = np.random.default_rng([seed, dims, size, i])
        shape = (tuple(params["lesion_radius"]), tuple(params["lesion_contrast"]))
        if dims == 2:
            pixels, lesion = chest_radiograph_phantom(rng, size, bool(label), *shape)
            rel = f"images/phantom2d_{i:05d}.dcm"
            _write_dicom(out / rel, template, pixels, i, seed)
        else:
            pixels, lesion = ct_phantom(rng, size, bool(label), *shape)
            rel = f"images/phantom3d_{i:05d}.nii.gz"
            _write_nifti(out / rel, pixels, spacing)
        items.append({"image": rel, "label": label})
        if lesion is not None:
            lesions[rel] = lesion
    splits = {"training": items[:n_train], "validation": items[n_train : n_train + n_val], "test": items[n_train + n_val :]}
    write_datalist(
        out / "dataset.json",
        splits,
        PHANTOM_CLASSES,
        phantom_intensity_map(dims),
        name="monai_robust chest radiograph phantom (2D)" if dims == 2 else "monai_robust CT phantom (3D)",
        description="Synthetic two-class phantoms: class 1 holds one small low-contrast lesion, class 0 none.",
        modality={"0": "CR" if dims == 2 else "CT"},
        spatial_dims=dims,
        spacing_mm=[spacing] * dims,
        generator={"name": "monai_robust.data.synthetic", "params": params},
        numTraining=n_train,
        numValidation=n_val,
        numTest=n - n_train - n_val,
        lesions=lesions,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate a phantom dataset and print a summary (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m monai_robust.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (absent, empty, or holding the same dataset)")
    parser.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3))
    parser.add_argument("--num-images", type=int, default=None, help="default 2000 (2D) / 400 (3D)")
    parser.add_argument("--size", type=int, default=None, help="pixels per side, default 32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import time

    t0 = time.perf_counter()
    try:
        path = generate_phantom_dataset(args.out, args.spatial_dims, args.num_images, args.size, args.seed)
    except ValueError as e:
        parser.error(str(e))  # exits with status 2 and the message, no traceback
    seconds = time.perf_counter() - t0
    from monai_robust.data.datalist import datalist_intensity_map, load_datalist, loading_transforms

    record = json.loads(path.read_text())
    imap = datalist_intensity_map(path)
    first = loading_transforms("image", imap)(load_datalist(path, "training")[0])["image"]
    print(f"datalist: {path}  ({seconds:.1f} s)")
    print(f"{record['name']}: classes {record['classes']}, spacing {record['spacing_mm']} mm")
    for split in ("training", "validation", "test"):
        labels = [item["label"] for item in record[split]]
        print(f"  {split:<10} {len(labels):5d} images, {sum(labels):5d} with lesion")
    print(f"intensity map: {imap.physical_range} {imap.units} -> model bounds {imap.bounds}")
    print(f"first training image via LoadImaged: shape {tuple(first.shape)}, range [{float(first.min()):.3f}, {float(first.max()):.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
