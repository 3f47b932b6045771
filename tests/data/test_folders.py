# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_robust.data.datalist import datalist_classes, datalist_intensity_map, load_datalist, loading_transforms
from monai_robust.data.folders import ImageDatalist, check_image, datalist_from_csv, datalist_from_folders
from monai_robust.utils.intensity import LinearIntensityMap

Image = pytest.importorskip("PIL.Image", reason="PNG tests need Pillow")


def _png(path: Path, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path, shared_data, phantom2d) -> Path:
    """root/{ct: DICOM file + series folder, mr: NIfTI, xray: PNG + phantom DICOM}."""
    root = tmp_path / "tree"
    for c in ("ct", "mr", "xray"):
        (root / c).mkdir(parents=True)
    phantoms = sorted((phantom2d.parent / "images").glob("*.dcm"))
    (root / "ct" / "series").symlink_to(shared_data / "dicom" / "ct_series")
    (root / "ct" / "slice.dcm").symlink_to(shared_data / "dicom" / "ct_series" / "7106.dcm")
    (root / "mr" / "brain.nii").symlink_to(shared_data / "nifti" / "anatomical.nii")
    _png(root / "xray" / "a.png")
    (root / "xray" / "b.dcm").symlink_to(phantoms[0])
    (root / ".DS_Store").write_text("ignored")
    (root / "README.txt").write_text("files directly in root are not items")
    return root


def test_class_folders_load(tree):
    dl = datalist_from_folders(tree)
    assert dl.classes == ["ct", "mr", "xray"] and dl.skipped == []
    assert [(Path(it["image"]).name, it["label"]) for it in dl.items] == [
        ("series", 0), ("slice.dcm", 0), ("brain.nii", 1), ("a.png", 2), ("b.dcm", 2)
    ]
    assert dl.class_counts() == {"ct": 2, "mr": 1, "xray": 2}
    load = loading_transforms("image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared series has non-uniform spacing (tested elsewhere)
        shapes = [tuple(load(it)["image"].shape) for it in dl.items]
    assert shapes == [(1, 16, 16, 4), (1, 16, 16), (1, 33, 41, 25), (1, 24, 20), (1, 32, 32)]


def test_class_order_and_unknown_class(tree):
    dl = datalist_from_folders(tree, classes=["xray", "mr", "ct"])
    assert {Path(it["image"]).name: it["label"] for it in dl.items}["brain.nii"] == 1
    with pytest.raises(ValueError, match="class folder 'xray' is not in classes") as err:
        datalist_from_folders(tree, classes=["ct", "mr"])
    assert str(tree / "xray") in str(err.value)
    with pytest.warns(UserWarning, match="skipped 1 bad input"):
        dl = datalist_from_folders(tree, classes=["ct", "mr"], on_error="skip")
    assert dl.skipped == [(str(tree / "xray"), f"{tree / 'xray'}: class folder 'xray' is not in classes ['ct', 'mr'].")]
    assert len(dl) == 3


def test_bad_images_raise_or_skip(tree, shared_data):
    ct = (shared_data / "dicom" / "693_UNCR.dcm").read_bytes()
    (tree / "ct" / "cut.dcm").write_bytes(ct[:-5000])
    (tree / "ct" / "notes.dcm").write_text("hello")
    Path(tree / "xray" / "cut.png").write_bytes(_png(tree / "tmp.png").read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated pixel data") as err:
        datalist_from_folders(tree)
    assert "cut.dcm" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 3 bad input"):
        dl = datalist_from_folders(tree, on_error="skip")
    reasons = {Path(p).name: r for p, r in dl.skipped}
    assert set(reasons) == {"cut.dcm", "notes.dcm", "cut.png"}
    assert "truncated pixel data" in reasons["cut.dcm"] and "not a DICOM file" in reasons["notes.dcm"]
    assert "unreadable PNG" in reasons["cut.png"]
    assert len(dl) == 5  # the good ones are all kept


def test_empty_and_mixed(tmp_path, tree, shared_data, phantom2d):
    with pytest.raises(ValueError, match="no class sub-folder"):
        datalist_from_folders(_mkdir(tmp_path / "void"))
    (tree / "empty").mkdir()
    with pytest.raises(ValueError, match="empty class folder"):
        datalist_from_folders(tree)
    (tree / "empty").rmdir()
    mixed = tree / "ct" / "mixed"
    mixed.mkdir()
    for f in (shared_data / "dicom" / "ct_series").glob("*.dcm"):
        (mixed / f.name).symlink_to(f)
    (mixed / "z.dcm").symlink_to(next((phantom2d.parent / "images").glob("*.dcm")))
    with pytest.raises(ValueError, match="mixed series"):
        datalist_from_folders(tree)
    with pytest.raises(ValueError, match="on_error"):
        datalist_from_folders(tree, on_error="ignore")
    with pytest.raises(ValueError, match="no valid image"), pytest.warns(UserWarning):
        datalist_from_folders(tree, classes=["none"], on_error="skip")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_csv_manifest(tmp_path, tree):
    csv = tmp_path / "manifest.csv"
    csv.write_text("image,label,note\ntree/ct/slice.dcm,lesion,x\ntree/mr/brain.nii,0,y\ntree/xray/a.png,normal,z\n")
    dl = datalist_from_csv(csv, classes=["normal", "lesion"])
    assert isinstance(dl, ImageDatalist) and dl.classes == ["normal", "lesion"]
    assert [it["label"] for it in dl.items] == [1, 0, 0] and all(Path(it["image"]).is_absolute() for it in dl.items)
    inferred = datalist_from_csv(csv)
    assert inferred.classes == ["0", "lesion", "normal"] and [it["label"] for it in inferred.items] == [1, 0, 2]
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("image,label\ntree/ct/slice.dcm,10\ntree/mr/brain.nii,2\n")
    assert datalist_from_csv(numeric).classes == ["2", "10"]
    imap = LinearIntensityMap.from_window(-1000.0, 1000.0, units="HU")
    item = loading_transforms("image", imap)(dl.items[0])
    assert item["image"].dtype == torch.float32 and 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0


@pytest.mark.parametrize(
    "rows,message",
    [
        ("tree/ct/slice.dcm,normal\ntree/ct/gone.dcm,normal\n", r"manifest.csv, line 3: image .*gone.dcm' does not exist"),
        ("tree/ct/slice.dcm,normal\ntree/mr/brain.nii,tumour\n", r"line 3: label 'tumour' is not in classes \['normal', 'lesion'\]"),
        ("tree/ct/slice.dcm,2\n", r"line 2: label '2' is not in classes"),
        ("tree/ct/slice.dcm,\n", r"line 2: label '' is not in classes"),
        ("tree/ct/notes.txt,normal\n", r"line 2: .*notes.txt: not a supported image"),
    ],
)
def test_csv_bad_rows(tmp_path, tree, rows, message):
    (tree / "ct" / "notes.txt").write_text("x")
    csv = tmp_path / "manifest.csv"
    csv.write_text("image,label\n" + rows)
    with pytest.raises(ValueError, match=message):
        datalist_from_csv(csv, classes=["normal", "lesion"])
    if rows.count("\n") > 1:  # one good row remains: skip-and-report
        with pytest.warns(UserWarning, match="skipped 1 bad input"):
            dl = datalist_from_csv(csv, classes=["normal", "lesion"], on_error="skip")
        assert len(dl) == 1 and len(dl.skipped) == 1 and "line 3" in dl.skipped[0][1]


def test_csv_structure(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,class\nx.dcm,a\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['image', 'label'\]"):
        datalist_from_csv(bad)
    bad.write_text("image,label\n")
    with pytest.raises(ValueError, match="no rows"):
        datalist_from_csv(bad)
    with pytest.raises(ValueError, match="manifest not found"):
        datalist_from_csv(tmp_path / "absent.csv")


def test_check_image_kinds(tree, phantom3d):
    assert check_image(tree / "ct" / "series") == "dicom_series"
    assert check_image(tree / "ct" / "slice.dcm") == "dicom"
    assert check_image(tree / "mr" / "brain.nii") == "nifti"
    assert check_image(tree / "xray" / "a.png") == "png"
    assert check_image(load_datalist(phantom3d, "test")[0]["image"]) == "nifti"
    cut = tree / "cut.nii.gz"
    cut.write_bytes(Path(load_datalist(phantom3d, "test")[0]["image"]).read_bytes()[:500])
    with pytest.raises(ValueError, match="unreadable NIfTI"):
        check_image(cut)
    assert check_image(cut, validate=False) == "nifti"


def test_split_and_to_json(tmp_path, phantom2d):
    root = tmp_path / "byclass"
    items = [it for s in ("training", "validation", "test") for it in load_datalist(phantom2d, s)]
    for it in items:
        folder = root / ("lesion" if it["label"] else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(it["image"]).name).symlink_to(it["image"])
    dl = datalist_from_folders(root, classes=["normal", "lesion"])
    parts = dl.split((0.5, 0.25, 0.25), seed=1)
    assert sorted(it["image"] for p in parts.values() for it in p) == sorted(it["image"] for it in dl.items)
    for name, per_class in (("training", 3), ("validation", 2), ("test", 1)):  # 6 per class: stratified
        assert np.bincount([it["label"] for it in parts[name]], minlength=2).tolist() == [per_class, per_class]
    assert dl.split((0.5, 0.25, 0.25), seed=1) == parts and dl.split((0.5, 0.25, 0.25), seed=2) != parts
    imap = LinearIntensityMap.from_window(0.0, 4095.0, units="stored value")
    path = dl.to_json(root / "dataset.json", imap, (0.5, 0.25, 0.25), seed=1)
    assert load_datalist(path, "training") == parts["training"]
    assert '"image": "lesion/' in path.read_text()  # stored relative to the JSON's folder
    assert datalist_classes(path) == ["normal", "lesion"] and datalist_intensity_map(path) == imap
    with pytest.raises(ValueError, match="exists"):
        dl.to_json(path)
    with pytest.raises(ValueError, match="fractions"):
        dl.split((0.5, 0.5, 0.5))
