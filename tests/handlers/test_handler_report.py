# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import io
import json

import pytest
import torch
from ignite.engine import Engine, Events

from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.pgd import PGD
from monai_robust.engines.evaluator import EvaluationOptions, RobustnessEvaluator
from monai_robust.handlers.report import RobustnessReport
from tests.utils import SmallCNN, train_classifier


@pytest.fixture(scope="module")
def evaluation():
    """A tiny trained 2D model with FGSM and PGD at two eps, a UAP and a detector."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids oversubscribing the 2 shared CPU cores
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (96,), generator=g)  # a bright (1) or dark (0) blob in the centre of noise
    grid = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    blob = torch.exp(-(grid[0] ** 2 + grid[1] ** 2) / 0.2)
    x = (0.35 + 0.1 * torch.randn(96, 1, 8, 8, generator=g) + (y.float() * 2 - 1).reshape(-1, 1, 1, 1) * 0.2 * blob).clamp(0, 1)
    net = SmallCNN(2, 1, 2, width=8)
    train_classifier(net, x[:64], y[:64], epochs=10, batch_size=32, lr=1e-2)
    data = [{"image": x[i : i + 16], "label": y[i : i + 16]} for i in range(64, 96, 16)]
    attacks = {"fgsm": FGSM(net, bounds=(0.0, 1.0)), "pgd": PGD(net, num_steps=3, bounds=(0.0, 1.0))}
    yield net, data, attacks
    torch.set_num_threads(n_threads)


def test_report_written(evaluation, tmp_path):
    net, data, attacks = evaluation
    stream = io.StringIO()
    handler = RobustnessReport(tmp_path, stream=stream, title="tiny")
    ev = RobustnessEvaluator(
        "cpu", data, net, attacks, [0.05, 0.2], uaps={"u": torch.full((1, 8, 8), 0.05)},
        detector=lambda im: im.reshape(im.shape[0], -1).std(1), class_names=["a", "b"], val_handlers=[handler], options=EvaluationOptions(num_examples=2),
    )
    ev.run()
    results = json.loads((tmp_path / "robustness.json").read_text())
    assert results["attacks"]["pgd"]["results"][1]["eps"] == 0.2 and results["meta"]["complete"]
    html = (tmp_path / "index.html").read_text()
    for name in ("accuracy_vs_eps.png", "auc_vs_eps.png", "detector_scores.png", "examples_pgd_0.2.png", "examples_uap_u.png"):
        assert (tmp_path / name).stat().st_size > 1000 and name in html
    assert "Validity checks" in html and "tiny" in html and set(handler.paths) >= {"json", "html", "accuracy"}
    table = stream.getvalue()
    assert "pgd" in table and "validity checks:" in table and "UAP u" in table


def test_json_only_and_bare_engine_errors(evaluation, tmp_path):
    net, data, attacks = evaluation
    ev = RobustnessEvaluator("cpu", data, net, attacks, [0.05], val_handlers=[RobustnessReport(tmp_path, html=False, console=False)])
    ev.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["robustness.json"]
    bare = Engine(lambda e, b: None)
    RobustnessReport(tmp_path / "x", console=False).attach(bare)
    with pytest.raises(RuntimeError, match="no robustness results"):
        bare.run([0])


def test_bare_engine_exception_is_reraised(tmp_path):
    engine = Engine(lambda e, b: (_ for _ in ()).throw(KeyError("bad batch")))
    handler = RobustnessReport(tmp_path, console=False)
    handler.attach(engine)
    assert engine.has_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED)
    with pytest.raises(KeyError):
        engine.run([0])
