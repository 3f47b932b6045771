# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest

from monai_robust.data.dataset_dir import SYNTHETIC, resolve_datalist


def test_missing_or_empty_folder_is_an_error_unless_synthetic_is_asked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"datsaet.*does not exist.*--synthetic True"):
        resolve_datalist(tmp_path / "datsaet", spatial_dims=2, num_images=8, size=16)
    assert not (tmp_path / "datsaet").exists()  # nothing generated in a mistyped folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        resolve_datalist(tmp_path / "empty", spatial_dims=2, num_images=8, size=16)
    made = resolve_datalist(tmp_path / "empty", spatial_dims=2, num_images=8, size=16, synthetic=True)
    assert made == tmp_path / "empty" / "dataset.json" and made.is_file()
    assert resolve_datalist(tmp_path / "empty", spatial_dims=2) == made  # an existing datalist is used as it is


def test_synthetic_keyword_and_foreign_folder(tmp_path):
    made = resolve_datalist(SYNTHETIC, spatial_dims=2, num_images=8, size=16, synthetic_dir=tmp_path / "phantoms")
    assert made == tmp_path / "phantoms" / "dataset.json" and made.is_file()
    with pytest.raises(ValueError, match="synthetic_dir"):
        resolve_datalist(SYNTHETIC, spatial_dims=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.dcm").write_bytes(b"")
    with pytest.raises(ValueError, match="holds files but no dataset.json"):
        resolve_datalist(tmp_path / "mine", spatial_dims=2, synthetic=True)
