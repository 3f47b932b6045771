# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Every file in ../shared/data/dicom and ../shared/data/nifti loads through the data layer, with checked values."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage
from monai.utils import optional_import

from monai_robust.data.datalist import load_image
from monai_robust.data.image_reader import DicomReader, is_dicom_input, read_dicom, read_dicom_series

_, HAS_J2K = optional_import("openjpeg")
_, HAS_PYLIBJPEG = optional_import("pylibjpeg")

# file, channel-first shape, (min, max) after rescale (and MONOCHROME1 inversion), intensity_units, spacing
SHARED_DICOM = [
    ("693_UNCR.dcm", (1, 512, 512), (-3024.0, 1468.0), "HU", (0.478516, 0.478516)),
    ("eCT_Supplemental.dcm", (1, 512, 512, 2), (-1024.0, 172.0), "HU", (0.388672, 0.388672, 10.0)),
    ("MR2_UNCR.dcm", (1, 1024, 1024), (6.1e-05, 2245.5977), "rescaled value", (0.195313, 0.195313)),
    ("emri_small.dcm", (1, 64, 64, 10), (0.0, 467.0), "stored value", (1.0, 1.0, 1.2)),
    ("US1_UNCR.dcm", (3, 640, 480), (0.0, 255.0), "stored value", (1.0, 1.0)),
]


@pytest.fixture(scope="module")
def loader() -> LoadImage:
    load = LoadImage(image_only=True, ensure_channel_first=True)
    load.register(DicomReader())
    return load


@pytest.mark.parametrize("name,shape,value_range,units,spacing", SHARED_DICOM)
def test_shared_dicom(shared_data, loader, name, shape, value_range, units, spacing):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = loader(shared_data / "dicom" / name)
    assert tuple(img.shape) == shape and img.dtype == torch.float32
    np.testing.assert_allclose([float(img.min()), float(img.max())], value_range, rtol=1e-4)
    assert img.meta["intensity_units"] == units
    np.testing.assert_allclose(img.meta["spacing"], spacing, rtol=1e-5)  # MR2 is sagittal: from the full affine


def test_ct_rescale_and_monai_agreement(shared_data, loader):
    path = shared_data / "dicom" / "693_UNCR.dcm"
    ds = pydicom.dcmread(path)
    img = loader(path)
    # HU = stored * slope + intercept, array axes (columns, rows) as in MONAI's PydicomReader(swap_ij=True)
    np.testing.assert_array_equal(img[0].numpy(), ds.pixel_array.T.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert img.meta["rescale_intercept"] == -1024.0 and img.meta["Modality"] == "CT"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(path)
    torch.testing.assert_close(img.as_tensor(), ref.as_tensor())
    torch.testing.assert_close(img.affine, ref.affine)
    lung_air = img[0] < -900
    assert 0.05 < float(lung_air.float().mean()) < 0.95  # air and tissue both present, in HU


def test_enhanced_ct_frames(shared_data, loader):
    """MONAI 1.6.1 puts the frames on the middle axis and ignores the functional-group rescale; we do not."""
    path = shared_data / "dicom" / "eCT_Supplemental.dcm"
    ds = pydicom.dcmread(path)
    img = loader(path)
    stored = ds.pixel_array  # (frames, rows, cols)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    normal = np.cross(*np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float).reshape(2, 3))
    order = np.argsort(np.asarray(z) * normal[2])
    for k, frame in enumerate(order):
        np.testing.assert_array_equal(img[0, :, :, k].numpy(), stored[frame].T.astype(np.float32) - 1024.0)
    step = img.affine[:3, 2].numpy()
    assert abs(np.linalg.norm(step) - abs(z[1] - z[0])) < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_shape = tuple(LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(path).shape)
    assert monai_shape == (1, 512, 2, 512)  # documents MONAI's behaviour that DicomReader corrects


def test_multiframe_mr(shared_data, loader):
    path = shared_data / "dicom" / "emri_small.dcm"
    stored = pydicom.dcmread(path).pixel_array
    img = loader(path)
    assert stored.shape == (10, 64, 64)
    np.testing.assert_array_equal(img[0].numpy(), stored.transpose(2, 1, 0).astype(np.float32))


def test_rgb_ultrasound(shared_data, loader):
    path = shared_data / "dicom" / "US1_UNCR.dcm"
    stored = pydicom.dcmread(path).pixel_array  # (rows, cols, 3)
    img = loader(path)
    np.testing.assert_array_equal(img.numpy(), stored.transpose(2, 1, 0).astype(np.float32))
    assert img.meta["PhotometricInterpretation"] == "RGB"
    assert not torch.equal(img[0], img[1])  # real colour, not a grey image repeated


@pytest.mark.skipif(not (HAS_J2K and HAS_PYLIBJPEG), reason="JPEG 2000 needs pylibjpeg and pylibjpeg-openjpeg (the 'dicom' extra)")
def test_jpeg2000_monochrome1(shared_data, loader):
    path = shared_data / "dicom" / "RG1_J2KI.dcm"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID.is_compressed and ds.PhotometricInterpretation == "MONOCHROME1"
    with pytest.warns(UserWarning, match="pixel spacing"):  # the file's PixelSpacing is [0, 0]
        img = loader(path)
    assert tuple(img.shape) == (1, 1841, 1955) and img.meta["monochrome1_inverted"]
    inverted = (2 ** int(ds.BitsStored) - 1) - ds.pixel_array.T.astype(np.float32)
    np.testing.assert_array_equal(img[0].numpy(), inverted)
    np.testing.assert_allclose(img.meta["spacing"], (1.0, 1.0))


def test_ct_series_volume(shared_data, loader):
    folder = shared_data / "dicom" / "ct_series"
    with pytest.warns(UserWarning, match="non-uniform slice spacing"):
        img = loader(folder)
    assert tuple(img.shape) == (1, 16, 16, 4)
    slices = read_dicom_series(folder)
    z = [float(s.ImagePositionPatient[2]) for s in slices]
    assert z == sorted(z) and len(set(z)) == 4
    for k, s in enumerate(slices):
        np.testing.assert_array_equal(img[0, :, :, k].numpy(), s.pixel_array.T.astype(np.float32) - 1024.0)
    np.testing.assert_allclose(img.affine[2, 3].item(), z[0])
    np.testing.assert_allclose(img.affine[2, 2].item(), (z[-1] - z[0]) / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(folder)
    torch.testing.assert_close(img.as_tensor(), ref.as_tensor())  # MONAI orders by InstanceNumber: same here
    torch.testing.assert_close(img.affine, ref.affine)


def test_series_sorted_by_position_not_name(shared_data, tmp_path, loader):
    src = sorted((shared_data / "dicom" / "ct_series").glob("*.dcm"))
    for k, f in enumerate(src):  # names in reverse order of position
        (tmp_path / f"{len(src) - k:02d}.dcm").symlink_to(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = loader(tmp_path), loader(shared_data / "dicom" / "ct_series")
    torch.testing.assert_close(a.as_tensor(), b.as_tensor())


@pytest.mark.parametrize("name,shape", [("anatomical.nii", (1, 33, 41, 25)), ("anatomical_label.nii.gz", (1, 33, 41, 25))])
def test_shared_nifti(shared_data, name, shape):
    img = load_image(shared_data / "nifti" / name)
    assert tuple(img.shape) == shape and img.dtype == torch.float32
    if "label" in name:
        assert set(torch.unique(img).tolist()) == {0.0, 1.0}
    else:
        assert float(img.max()) > 0 and torch.isfinite(img).all()


def test_is_dicom_input(shared_data, tmp_path):
    assert is_dicom_input(shared_data / "dicom" / "693_UNCR.dcm") and is_dicom_input(shared_data / "dicom" / "ct_series")
    assert not is_dicom_input(shared_data / "nifti" / "anatomical.nii")
    renamed = tmp_path / "noext"
    shutil.copy(shared_data / "dicom" / "ct_series" / "7106.dcm", renamed)
    assert is_dicom_input(renamed)  # found by the DICM preamble


def _truncate(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def test_bad_dicom_files(shared_data, tmp_path):
    ct = shared_data / "dicom" / "693_UNCR.dcm"
    size = ct.stat().st_size
    cases = [
        (_truncate(ct, tmp_path / "cut_pixels.dcm", size - 1000), "truncated pixel data"),
        (_truncate(ct, tmp_path / "cut_header.dcm", 600), "no image in this DICOM file"),
        (_truncate(ct, tmp_path / "cut_preamble.dcm", 100), "not a DICOM file"),
    ]
    (tmp_path / "text.dcm").write_text("not an image")
    cases.append((tmp_path / "text.dcm", "not a DICOM file"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            read_dicom(path)
        assert str(path) in str(err.value)
        load = LoadImage(image_only=True)
        load.register(DicomReader())
        with pytest.raises(ValueError, match=message):
            load(path)


def test_bad_series(shared_data, tmp_path, phantom2d):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        read_dicom_series(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in (shared_data / "dicom" / "ct_series").glob("*.dcm"):
        (mixed / f.name).symlink_to(f)
    other = next((phantom2d.parent / "images").glob("*.dcm"))
    (mixed / "other.dcm").symlink_to(other)
    with pytest.raises(ValueError, match="mixed series, 2 SeriesInstanceUIDs") as err:
        read_dicom_series(mixed)
    assert str(mixed) in str(err.value) and "other.dcm" in str(err.value)
    dup = tmp_path / "dup"
    dup.mkdir()
    first = next((shared_data / "dicom" / "ct_series").glob("*.dcm"))
    (dup / "a.dcm").symlink_to(first)
    (dup / "b.dcm").symlink_to(first)
    with pytest.raises(ValueError, match="share the same position"):
        read_dicom_series(dup)


def test_options_and_stacking(tmp_path, shared_data, phantom2d):
    files = sorted((phantom2d.parent / "images").glob("*.dcm"))[:2]
    ds = pydicom.dcmread(files[0])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleIntercept = "-100"
    mono1 = tmp_path / "mono1.dcm"
    ds.save_as(mono1)
    stored = ds.pixel_array.T.astype(np.float32)
    cases = [({}, 4095 - stored - 100), ({"invert_monochrome1": False}, stored - 100), ({"rescale": False}, 4095 - stored)]
    for kwargs, expected in cases:
        load = LoadImage(image_only=True)
        load.register(DicomReader(**kwargs))
        img = load(mono1)
        np.testing.assert_array_equal(img.numpy(), expected)
        assert img.meta["monochrome1_inverted"] == kwargs.get("invert_monochrome1", True)
    load = LoadImage(image_only=True)
    load.register(DicomReader())
    both = load([str(f) for f in files])  # several files: stacked as channels, as MONAI's readers do
    assert tuple(both.shape) == (2, 32, 32)
    np.testing.assert_array_equal(both[1].numpy(), pydicom.dcmread(files[1]).pixel_array.T.astype(np.float32))
    with pytest.raises(ValueError, match="cannot stack"):
        load([str(files[0]), str(shared_data / "dicom" / "693_UNCR.dcm")])
