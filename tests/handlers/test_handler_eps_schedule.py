# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_robust.attacks.pgd import PGD
from monai_robust.engines.prepare_batch import AttackBatch
from monai_robust.handlers.eps_schedule import EpsSchedule
from tests.utils import SmallCNN

CASES = [  # (step, num_warmup, start, expected eps per epoch/iteration, as fractions of eps)
    ("epoch", 4, 0.0, [0.25, 0.5, 0.75, 1.0, 1.0]),
    ("epoch", 1, 0.0, [1.0, 1.0]),
    ("iteration", 2, 0.5, [0.75, 1.0, 1.0, 1.0]),
]


@pytest.mark.parametrize("step,num_warmup,start,expected", CASES)
def test_ramp(step, num_warmup, start, expected):
    attack = PGD(torch.nn.Linear(2, 2), 0.04, num_steps=4)  # step 2.5 * eps / 4
    batch = AttackBatch(attack)
    schedule = EpsSchedule(batch, num_warmup, start=start * 0.04, step=step)
    seen = []
    engine = Engine(lambda e, b: seen.append((batch.eps, attack.step_for(batch.eps), e.state.metrics["eps"])))
    schedule.attach(engine)
    schedule.attach(engine)  # attaching twice does not ramp twice
    if step == "epoch":
        engine.run([0], max_epochs=len(expected))
    else:
        engine.run([0] * len(expected), max_epochs=1)
    assert [round(e / 0.04, 6) for e, _, _ in seen] == expected
    assert all(abs(s - 2.5 * e / 4) < 1e-12 and m == e for e, s, m in seen)  # the step follows the budget
    assert attack.eps == 0.04  # the attack itself is not changed


def test_bad_input():
    attack = PGD(torch.nn.Linear(2, 2), 0.04)
    for kwargs in ({"num_warmup": 0}, {"num_warmup": 2.5}, {"num_warmup": 2, "start": 0.05},
                   {"num_warmup": 2, "step": "batch"}, {"num_warmup": 2, "eps": -1.0}):
        with pytest.raises(ValueError):
            EpsSchedule(AttackBatch(attack), **kwargs)
    with pytest.raises(ValueError, match="bounded attack"):
        EpsSchedule(SmallCNN(2, 1, 2), 3)
    with pytest.raises(ValueError, match="bounded attack"):
        EpsSchedule(attack, 3)  # a bare attack: the schedule sets the budget of its caller, not the attack
    zero = AttackBatch(PGD(torch.nn.Linear(2, 2), 0.0))
    with pytest.raises(ValueError, match="eps"):
        EpsSchedule(zero, 3)  # no budget to ramp to: say it
    assert EpsSchedule(zero, 3, eps=0.1).value(3) == pytest.approx(0.1)
