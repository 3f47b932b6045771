# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import warnings

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler

from monai_robust.handlers import ResumableTraining
from monai_robust.utils.files import CorruptFileError
from tests.utils import SmallCNN


class Interrupted(Exception):
    pass


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    return [{"image": x[i : i + 4], "label": y[i : i + 4]} for i in range(0, 16, 4)]


def _run(tmp_path, epochs, stop_at=None, validate=False, **kwargs):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2)
    net.dropout.p = 0.0  # no random draws: an uninterrupted and a resumed run can be compared
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = SupervisedEvaluator("cpu", _data(), net, decollate=False) if validate else None
        handler = ResumableTraining(net, tmp_path / "state.pt", tmp_path / "model.pt", {"optimizer": opt}, evaluator, **kwargs)
        handlers = ([ValidationHandler(1, evaluator)] if validate else []) + [handler]
        trainer = SupervisedTrainer("cpu", epochs, _data(), net, opt, torch.nn.CrossEntropyLoss(), train_handlers=handlers,
                                    decollate=False)
    ran = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: ran.append(e.state.epoch))
    if stop_at is not None:
        def stop(engine):
            if engine.state.epoch == stop_at:
                raise Interrupted
        trainer.add_event_handler(Events.EPOCH_STARTED, stop)
    trainer.run()
    return net, handler, ran


def test_interrupted_run_leaves_no_model_and_resumes(tmp_path):
    full, _, _ = _run(tmp_path / "full", 3)
    with pytest.raises(Interrupted):
        _run(tmp_path / "cut", 3, stop_at=3)  # killed after two complete epochs
    assert not (tmp_path / "cut" / "model.pt").exists()  # nothing at the canonical path looks finished
    assert torch.load(tmp_path / "cut" / "state.pt", weights_only=True)["trainer"]["iteration"] == 8
    resumed, handler, ran = _run(tmp_path / "cut", 3)
    assert handler.resumed_from == 2 and ran == [3]  # only the missing epoch ran
    assert not (tmp_path / "cut" / "state.pt").exists()
    final = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for k, v in full.state_dict().items():  # optimizer momentum restored too: the same weights as uninterrupted
        torch.testing.assert_close(final[k], v)
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["model.pt"]


def test_best_validated_weights_and_fresh_start(tmp_path):
    net, handler, _ = _run(tmp_path, 2, validate=True)
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(best) == set(net.state_dict())
    with pytest.raises(Interrupted):
        _run(tmp_path, 3, stop_at=2)
    _, handler, ran = _run(tmp_path, 2, resume=False)
    assert handler.resumed_from is None and ran == [1, 2]


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage"])
def test_corrupt_or_foreign_state_is_named(tmp_path, content):
    (tmp_path / "state.pt").write_bytes(content)
    with pytest.raises(CorruptFileError, match="training state .*state.pt"):
        _run(tmp_path, 1)
    torch.save({"network": {"nope": torch.zeros(1)}, "trainer": {}}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="state.pt.*does not fit this run"):
        _run(tmp_path, 1)
    with pytest.raises(ValueError, match="must differ"):
        ResumableTraining(SmallCNN(2, 1, 2), tmp_path / "a.pt", tmp_path / "a.pt")


def test_checked_checkpoint_loader_names_a_truncated_file(tmp_path):
    from monai_robust.handlers import CheckedCheckpointLoader

    net = SmallCNN(2, 1, 2)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    other = SmallCNN(2, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = SupervisedEvaluator("cpu", _data(), other, decollate=False)
    CheckedCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": other}).attach(evaluator)
    evaluator.run()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    (tmp_path / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes()[:500])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = SupervisedEvaluator("cpu", _data(), other, decollate=False)
    CheckedCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": other}).attach(evaluator)
    with pytest.raises(CorruptFileError, match=r"checkpoint '.*model\.pt' cannot be read"):
        evaluator.run()


def test_pack_shapes_the_model_file(tmp_path):
    """``pack`` decides what model_file holds (a bundle's harden.json: the weights with their sparsity-block record)."""
    record = {"after": ["conv"], "block": "topk", "kwargs": {"k": 0.5}, "example_shape": None}
    net, _, _ = _run(tmp_path, 1, pack=lambda sd: {"model": sd, "blocks": record})
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(saved) == {"model", "blocks"} and saved["blocks"] == record
    assert all(torch.equal(saved["model"][k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="pack must be callable"):
        ResumableTraining(SmallCNN(2, 1, 2), tmp_path / "s.pt", tmp_path / "m.pt", pack="hardened")
