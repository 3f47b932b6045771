# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai_robust.utils.files``: atomic writes and named read errors."""

from __future__ import annotations

import pytest
import torch

from monai_robust.utils.files import CorruptFileError, atomic_torch_save, load_torch_file


def test_atomic_save_keeps_the_previous_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, path)
    assert torch.equal(load_torch_file(path)["w"], torch.ones(3))

    def dies_mid_write(obj, f):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt  # a kill between the first and the last byte

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_torch_file(path)["w"], torch.ones(3))  # the previous file, whole
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_unreadable_files_are_named(tmp_path, kind):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    data = {"empty": b"", "truncated": path.read_bytes()[:200], "garbage": b"not a checkpoint at all"}[kind]
    path.write_bytes(data)
    with pytest.raises(CorruptFileError, match=r"checkpoint '.*model\.pt'"):
        load_torch_file(path, "checkpoint")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch_file(tmp_path / "missing.pt", "checkpoint")
