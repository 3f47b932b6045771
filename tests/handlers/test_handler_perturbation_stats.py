# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_robust.attacks.pgd import PGD
from monai_robust.engines.evaluator import ProbeOptions, RobustnessEvaluator
from monai_robust.handlers.perturbation_stats import PerturbationStats
from tests.utils import SmallCNN

CLEAN = torch.full((4, 1, 4, 4), 0.5)
DELTA = torch.tensor([0.1, 0.05, 0.12, 0.0]).reshape(4, 1, 1, 1)

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread avoids oversubscribing the 2 shared CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



@pytest.mark.parametrize(
    "adv, eps, bounds, expected",
    [
        (CLEAN + DELTA, 0.1, (0.0, 1.0), {"at_boundary": 0.5, "over_budget": 2, "out_of_bounds": 0}),
        (CLEAN + DELTA * 6, 1.0, (0.0, 1.0), {"at_boundary": 0.0, "over_budget": 0, "out_of_bounds": 4}),
        (CLEAN + DELTA, None, None, {"at_boundary": 0.0, "over_budget": 0, "out_of_bounds": 0}),
    ],
)
def test_counts_on_bare_engine(adv, eps, bounds, expected):
    """Two iterations of the same batch: norms (0.1, 0.05, 0.12, 0) times 1 or 6."""
    stats = PerturbationStats(log=False)
    engine = Engine(lambda e, b: {"image": CLEAN, "adversarial": {"k": {"image": adv, "eps": eps, "lp": "inf", "bounds": bounds}}})
    stats.attach(engine)
    engine.run([0, 1], max_epochs=1)
    s = stats.summary()["k"]
    assert s["n"] == 8 and {k: s[k] for k in expected} == expected
    assert engine.state.metrics["k/delta_norm_max"] == pytest.approx(float((adv - CLEAN).abs().max()))


def test_on_evaluator_all_within_budget():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2, width=4).eval()
    data = [{"image": torch.rand(8, 1, 8, 8), "label": torch.randint(0, 2, (8,))}]
    ev = RobustnessEvaluator("cpu", data, net, {"pgd": PGD(net, num_steps=2, bounds=(0.0, 1.0))}, [0.05], probe_options=ProbeOptions(enabled=False))
    stats = PerturbationStats(log=False)
    stats.attach(ev)
    ev.run()
    s = stats.summary()["pgd@0.05"]
    assert s["over_budget"] == 0 and s["out_of_bounds"] == 0 and s["delta_norm_max"] <= 0.05 + 1e-6
    assert "noise:Linf@0.05" in stats.summary()


def test_bad_tolerance():
    with pytest.raises(ValueError, match="boundary_rtol"):
        PerturbationStats(boundary_rtol=-1)
