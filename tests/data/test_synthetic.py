# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImaged

from monai_robust.data.datalist import (
    datalist_classes,
    datalist_intensity_map,
    load_datalist,
    loading_transforms,
)
from monai_robust.data.synthetic import (
    chest_radiograph_phantom,
    ct_phantom,
    generate_phantom_dataset,
    main,
    phantom_intensity_map,
)
from tests.data.conftest import PHANTOM_ARGS


def _digests(datalist: Path) -> dict[str, str]:
    root = datalist.parent
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_datalist_record(phantom2d, phantom3d):
    for datalist, dims in ((phantom2d, 2), (phantom3d, 3)):
        record = json.loads(datalist.read_text())
        n = PHANTOM_ARGS[dims]["num_images"]
        splits = [load_datalist(datalist, s) for s in ("training", "validation", "test")]
        assert [len(s) for s in splits] == [record["numTraining"], record["numValidation"], record["numTest"]]
        assert sum(len(s) for s in splits) == n and record["spatial_dims"] == dims
        assert datalist_classes(datalist) == ["normal", "lesion"]
        assert datalist_intensity_map(datalist) == phantom_intensity_map(dims)
        items = [it for s in splits for it in s]
        assert all(Path(it["image"]).is_absolute() and Path(it["image"]).is_file() for it in items)
        assert [it["label"] for it in items] == [i % 2 for i in range(n)]
        assert len(record["lesions"]) == n // 2  # one lesion per positive image, none in negatives


def test_dicom_tags(phantom2d):
    items = load_datalist(phantom2d, "training")
    ds = [pydicom.dcmread(it["image"]) for it in items[:2]]
    d = ds[0]
    assert d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert d.SOPClassUID == pydicom.uid.ComputedRadiographyImageStorage == d.file_meta.MediaStorageSOPClassUID
    assert d.SOPInstanceUID == d.file_meta.MediaStorageSOPInstanceUID
    assert d.Modality == "CR" and d.PhotometricInterpretation == "MONOCHROME2" and d.BitsAllocated == 16
    assert (d.Rows, d.Columns) == (PHANTOM_ARGS[2]["size"],) * 2 and float(d.PixelSpacing[0]) > 0
    assert float(d.RescaleSlope) == 1.0 and float(d.RescaleIntercept) == 0.0
    assert d.PatientIdentityRemoved == "YES" and d.PatientID.startswith("PH") and d.PatientID != ds[1].PatientID
    uids = [x for d in ds for x in (d.SOPInstanceUID, d.StudyInstanceUID, d.SeriesInstanceUID)]
    assert len(set(uids)) == len(uids)
    for uid in uids:
        assert pydicom.uid.UID(uid).is_valid
    assert d.pixel_array.dtype == np.uint16 and int(d.pixel_array.max()) <= 4095


def test_nifti_header(phantom3d):
    item = load_datalist(phantom3d, "training")[0]
    img = nib.load(item["image"])
    spacing = json.loads(phantom3d.read_text())["spacing_mm"]
    assert img.get_data_dtype() == np.int16 and img.shape == (PHANTOM_ARGS[3]["size"],) * 3
    np.testing.assert_allclose(img.header.get_zooms(), spacing)
    np.testing.assert_allclose(np.diag(img.affine)[:3], spacing)
    hu = np.asarray(img.dataobj)
    assert hu.min() >= -1024 and hu.max() <= 3071 and (hu < -900).any() and (hu > 0).any()  # air and tissue


@pytest.mark.parametrize("dims", [2, 3])
def test_monai_loadimaged_and_lesion(dims, phantom2d, phantom3d):
    datalist = phantom2d if dims == 2 else phantom3d
    imap = datalist_intensity_map(datalist)
    record = json.loads(datalist.read_text())
    size = PHANTOM_ARGS[dims]["size"]
    tf = loading_transforms("image", imap)
    for item in load_datalist(datalist, "training")[:4]:
        out = tf(item)
        img = out["image"]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32 and tuple(img.shape) == (1,) + (size,) * dims
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 and out["label"] == item["label"]
        np.testing.assert_allclose(img.pixdim, record["spacing_mm"], rtol=1e-5)
        # MONAI's own readers, named: with itk installed (MONAI Label needs it) MONAI would pick ITKReader first
        reader = "PydicomReader" if dims == 2 else "NibabelReader"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = LoadImaged("image", reader=reader, image_only=True, ensure_channel_first=True)(item)["image"]
        if dims == 2:  # a radiograph has no patient position: MONAI warns and uses an identity affine
            assert any("ImagePositionPatient" in str(w.message) for w in caught)
        np.testing.assert_allclose(img[0].numpy(), np.clip(imap.to_model(raw[0].numpy()), 0, 1), atol=1e-6)
        rel = str(Path(item["image"]).relative_to(datalist.parent))
        assert (rel in record["lesions"]) == bool(item["label"])


@pytest.mark.parametrize("dims", [2, 3])
def test_files_hold_the_generator_output(dims, phantom2d, phantom3d):
    datalist = phantom2d if dims == 2 else phantom3d
    args, record = PHANTOM_ARGS[dims], json.loads(datalist.read_text())
    gen = chest_radiograph_phantom if dims == 2 else ct_phantom
    for i, item in enumerate(record["training"][:3]):
        expected, lesion = gen(np.random.default_rng([args["seed"], dims, args["size"], i]), args["size"], bool(i % 2))
        path = datalist.parent / item["image"]
        stored = pydicom.dcmread(path).pixel_array if dims == 2 else np.asarray(nib.load(path).dataobj)
        np.testing.assert_array_equal(stored, expected)
        assert record["lesions"].get(item["image"]) == lesion


@pytest.mark.parametrize("dims,size", [(2, 32), (2, 64), (3, 24)])
def test_lesion_is_the_only_difference(dims, size):
    gen, sign = (chest_radiograph_phantom, 1.0) if dims == 2 else (ct_phantom, -1.0)
    contrast = (600.0, 800.0) if dims == 2 else (80.0, 100.0)
    for k in range(3):
        pos, lesion = gen(np.random.default_rng(k), size, True, contrast=contrast)
        neg, none = gen(np.random.default_rng(k), size, False, contrast=contrast)
        assert none is None and pos.dtype == neg.dtype
        diff = sign * (pos.astype(np.float64) - neg.astype(np.float64))
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in diff.shape], indexing="ij"), -1)
        weight = np.clip(diff, 0, None)[..., None]
        centroid = (grid * weight).reshape(-1, dims).sum(0) / weight.sum()
        assert np.abs(centroid - np.asarray(lesion["center"])).max() <= 0.5
        assert 0.5 * lesion["amplitude"] <= diff.max() <= 1.1 * lesion["amplitude"] + 1  # off-grid centre, exposure
        extent = 4 * lesion["sigma"] if dims == 2 else lesion["radius"] + 3  # Gaussian tail / logistic edge < 1
        far = np.linalg.norm(grid - np.asarray(lesion["center"]), axis=-1) > extent
        assert far.sum() > diff.size / 10 and np.abs(diff[far]).max() <= 1.0


def test_determinism_and_idempotence(tmp_path, phantom2d):
    a = generate_phantom_dataset(tmp_path / "a", spatial_dims=2, **PHANTOM_ARGS[2])
    assert _digests(a) == _digests(phantom2d)  # same seed -> byte-identical files
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    assert generate_phantom_dataset(tmp_path / "a", spatial_dims=2, **PHANTOM_ARGS[2]) == a
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == mtimes  # nothing rewritten
    b = generate_phantom_dataset(tmp_path / "b", spatial_dims=2, **{**PHANTOM_ARGS[2], "seed": 4})
    pix = [pydicom.dcmread(load_datalist(d, "training")[0]["image"]).pixel_array for d in (a, b)]
    assert not np.array_equal(*pix)


def test_first_images_do_not_depend_on_count(tmp_path, phantom3d):
    more = generate_phantom_dataset(tmp_path / "more", spatial_dims=3, **{**PHANTOM_ARGS[3], "num_images": 10})
    first = [np.asarray(nib.load(load_datalist(d, "training")[0]["image"]).dataobj) for d in (phantom3d, more)]
    np.testing.assert_array_equal(*first)


def test_never_overwrites(tmp_path, phantom2d):
    with pytest.raises(ValueError, match="different dataset"):
        generate_phantom_dataset(phantom2d.parent, spatial_dims=2, **{**PHANTOM_ARGS[2], "seed": 99})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        generate_phantom_dataset(other, spatial_dims=2, **PHANTOM_ARGS[2])
    assert (other / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".other.partial-*"))
    copy = tmp_path / "copy"
    shutil.copytree(phantom2d.parent, copy)
    next((copy / "images").glob("*.dcm")).unlink()
    with pytest.raises(ValueError, match="1 file.* missing"):
        generate_phantom_dataset(copy, spatial_dims=2, **PHANTOM_ARGS[2])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1}, {"num_images": 3}, {"size": 8}, {"seed": -1}, {"splits": (0.5, 0.5, 0.0)},
        {"splits": (0.5, 0.6, 0.1)}, {"lesion_radius": (0.2, 0.1)}, {"lesion_radius": (0.1, 0.7)},
        {"lesion_contrast": (-5, 10)}, {"lesion_contrast": (1, 2, 3)},
    ],
)
def test_ill_args(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_phantom_dataset(tmp_path / "x", **{"spatial_dims": 2, "num_images": 6, "size": 16, **kwargs})
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "cli"), "--spatial-dims", "2", "--num-images", "6", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "dataset.json" in out and "training" in out and "(1, 16, 16)" in out
    with pytest.raises(SystemExit) as exit_info:  # a different dataset in the same folder: a clear error, status 2
        main(["--out", str(tmp_path / "cli"), "--spatial-dims", "2", "--num-images", "8", "--size", "16"])
    assert exit_info.value.code == 2 and "holds a different dataset" in capsys.readouterr().err
