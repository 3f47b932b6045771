# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import json

import pytest
import torch

from monai_robust.data.datalist import (
    datalist_classes,
    datalist_intensity_map,
    image_loader,
    load_datalist,
    load_image,
    loading_transforms,
    write_datalist,
)
from monai_robust.utils.intensity import LinearIntensityMap


def test_absolute_image_paths_work_from_anywhere(tmp_path, phantom2d):
    record = json.loads(phantom2d.read_text())
    moved = tmp_path / "elsewhere.json"
    record["training"] = [{**it, "image": str(phantom2d.parent / it["image"])} for it in record["training"]]
    moved.write_text(json.dumps(record))
    assert [it["image"] for it in load_datalist(moved)] == [it["image"] for it in load_datalist(phantom2d)]


def test_bad_datalists(tmp_path, phantom2d):
    with pytest.raises(ValueError, match="datalist file not found"):
        load_datalist(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        datalist_classes(tmp_path / "bad.json")
    (tmp_path / "bare.json").write_text(json.dumps({"training": [{"image": "x.dcm", "label": 0}]}))
    with pytest.raises(ValueError, match=r"no split 'test'; lists in this file: \['training'\]"):
        load_datalist(tmp_path / "bare.json", "test")
    with pytest.raises(ValueError, match="no 'intensity_map'"):
        datalist_intensity_map(tmp_path / "bare.json")
    with pytest.raises(ValueError, match="no 'classes'"):
        datalist_classes(tmp_path / "bare.json")


def test_write_datalist_checks(tmp_path):
    item = {"image": str(tmp_path / "a.dcm"), "label": 1}
    with pytest.raises(ValueError, match="not an index into classes"):
        write_datalist(tmp_path / "d.json", {"training": [item]}, ["only"])
    with pytest.raises(ValueError, match="needs 'image' and 'label'"):
        write_datalist(tmp_path / "d.json", {"training": [{"image": "a.dcm"}]}, ["a", "b"])
    path = write_datalist(tmp_path / "d.json", {"training": [item]}, ["a", "b"], name="mine")
    assert json.loads(path.read_text())["training"] == [{"image": "a.dcm", "label": 1}]
    assert json.loads(path.read_text())["name"] == "mine" and "intensity_map" not in json.loads(path.read_text())
    assert load_datalist(path) == [item]
    with pytest.raises(ValueError, match="overwrite=True"):
        write_datalist(path, {"training": [item]}, ["a", "b"])
    write_datalist(path, {"training": []}, ["a", "b"], overwrite=True)


def test_loading_transforms_without_map(phantom2d):
    item = load_datalist(phantom2d, "test")[0]
    raw = loading_transforms("image")(item)["image"]
    scaled = loading_transforms("image", datalist_intensity_map(phantom2d))(item)["image"]
    assert raw.dtype == scaled.dtype == torch.float32 and float(raw.max()) > 1.0  # stored values kept
    torch.testing.assert_close(scaled, (raw / 4095.0).clamp(0, 1))
    torch.testing.assert_close(load_image(item["image"]), image_loader()(item["image"]))
    with pytest.raises(ValueError, match="physical_range"):
        loading_transforms("image", LinearIntensityMap(slope=2.0))
