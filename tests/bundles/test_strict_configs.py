# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Config faults of our bundles (issue 18, item 5): a mistyped dataset folder, an interrupted training run, fewer
training images than one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "robust_xray_classification"
TINY = {"num_images": 24, "image_size": 32, "batch_size": 8}


class Interrupted(Exception):
    pass


def _workflow(root: Path, configs=("train.json",), **override) -> ConfigWorkflow:
    folder = BUNDLE / "configs"
    wf = ConfigWorkflow(
        config_file=[str(folder / c) for c in configs], meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"), workflow_type=None, bundle_root=str(root), **{**TINY, **override},
    )
    wf.initialize()
    return wf


def _causes(e: BaseException) -> str:
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__
    return " | ".join(out)


def test_missing_dataset_dir_is_an_error_unless_synthetic_is_asked_for(tmp_path):
    typo = tmp_path / "datset"
    with pytest.raises(Exception) as info:
        _workflow(tmp_path, dataset_dir=str(typo), num_epochs=1).run()
    assert "datset" in _causes(info.value) and "does not exist" in _causes(info.value)
    assert not typo.exists() and not (tmp_path / "models").exists()  # no phantoms written, nothing trained
    wf = _workflow(tmp_path, dataset_dir=str(typo), synthetic=True, num_epochs=1)
    wf.run()
    assert (typo / "dataset.json").is_file() and (tmp_path / "models" / "model.pt").is_file()


def test_fewer_training_images_than_one_batch_still_trains(tmp_path, capfd):
    wf = _workflow(tmp_path, batch_size=32, num_epochs=1)  # 24 phantoms: 17 training images, drop_last
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and (tmp_path / "models" / "model.pt").is_file()
    out = capfd.readouterr()
    assert "fewer than batch_size=32: training on batches of 17" in out.out + out.err  # the bundle's log says so


def test_interrupted_training_resumes_from_its_last_complete_epoch(tmp_path):
    wf = _workflow(tmp_path, num_epochs=3)
    trainer = wf.parser.get_parsed_content("train#trainer")

    def kill(engine):
        if engine.state.epoch == 3:
            raise Interrupted

    trainer.add_event_handler(Events.EPOCH_STARTED, kill)
    with pytest.raises(Exception) as info:
        wf.run()
    assert isinstance(info.value.__cause__, Interrupted)
    models = tmp_path / "models"
    assert not (models / "model.pt").exists()  # two epochs done, the run incomplete: no finished-looking model
    assert (models / "model.train_state.pt").is_file()

    wf = _workflow(tmp_path, num_epochs=3)
    trainer = wf.parser.get_parsed_content("train#trainer")
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf.run()
    assert epochs == [3] and wf.parser.get_parsed_content("train#checkpoint").resumed_from == 2
    assert sorted(p.name for p in models.iterdir()) == ["model.pt"]
    assert isinstance(torch.load(models / "model.pt", weights_only=True), dict)


def test_evaluating_a_truncated_checkpoint_names_it(trained_xray_bundle, tmp_path):
    import shutil

    _, root, overrides = trained_xray_bundle
    broken = tmp_path / "root"
    shutil.copytree(root, broken)
    model = broken / "models" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    wf = _workflow(broken, ("train.json", "evaluate.json"), stages=[], **overrides)
    with pytest.raises(Exception) as info:
        wf.run()
    assert f"checkpoint '{model}' cannot be read" in _causes(info.value)
