# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""AttackProgress: the bar ticks inside an AutoAttack call, knows its total (so tqdm gives a time estimate) and ends at
the planned mark; a failing run closes it and the exception goes on."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Events

from monai_robust.attacks import PGD, AutoAttack
from monai_robust.engines.budget import planned_passes
from monai_robust.engines.evaluator import EvaluationOptions, RobustnessEvaluator
from monai_robust.engines.events import RobustEvents
from monai_robust.handlers.attack_progress import AttackProgress
from tests.utils import SmallCNN


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 3, width=4).eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)  # labelled by the model itself: every sample is attacked
    data = [{"image": x[i : i + 6], "label": y[i : i + 6]} for i in (0, 6)]
    attacks = {"PGD": PGD(net, num_steps=3, bounds=(0.0, 1.0)),
               "AutoAttack": AutoAttack(net, num_steps=2, num_queries=4, bounds=(0.0, 1.0))}
    return net, data, attacks


def test_ticks_inside_autoattack_and_reaches_the_total(tiny):
    net, data, attacks = tiny
    stream = io.StringIO()
    progress = AttackProgress(desc="tiny", file=stream, mininterval=0)
    ev = RobustnessEvaluator("cpu", data, net, attacks, [0.01, 0.05], progress=False,
                             options=EvaluationOptions(noise_control=False, num_examples=0))
    progress.attach(ev)
    current, inside, totals = [None], [], []  # the bar's position at each forward pass inside an AutoAttack call
    ev.add_event_handler(RobustEvents.ATTACK_STARTED, lambda e: current.__setitem__(0, e.state.attack_key[0]))
    ev.add_event_handler(RobustEvents.ATTACK_COMPLETED, lambda e: (current.__setitem__(0, None), totals.append(progress.bar.total)))
    net.register_forward_hook(lambda m, a, o: inside.append(progress.bar.n) if current[0] == "AutoAttack" else None)
    ev.run()
    per_batch = 2 * (planned_passes(attacks["PGD"], 3) + planned_passes(attacks["AutoAttack"], 3))
    assert planned_passes(attacks["AutoAttack"], 3) == 2 + 2 * 2 + 2 * 2 + 4  # APGD-CE, APGD-T, FAB-T (2 targets), Square
    assert set(totals) == {2 * per_batch}  # known from the first attack call on: tqdm's time estimate needs it
    assert len(set(inside)) > 4  # it moves during AutoAttack's calls, not only between them
    assert progress.bar is None and len(ev.network._forward_hooks) == 1  # closed, its hook removed (ours is left)
    text = stream.getvalue()
    assert "AutoAttack" in text and f"/{2 * per_batch}" in text and "passes/s" in text


def test_closed_and_reraised_on_failure(tiny):
    net, data, attacks = tiny
    progress = AttackProgress(file=io.StringIO())
    ev = RobustnessEvaluator("cpu", data, net, attacks, [0.01], progress=False)
    progress.attach(ev)

    def boom(engine):
        raise RuntimeError("boom")

    ev.add_event_handler(Events.ITERATION_COMPLETED, boom)  # a failing attack is recorded, not raised: fail here
    with pytest.raises(RuntimeError, match="boom"):
        ev.run()
    assert progress.bar is None and ev.network._forward_hooks == {}


def test_disabled_draws_nothing(tiny):
    net, data, attacks = tiny
    stream = io.StringIO()
    ev = RobustnessEvaluator("cpu", data, net, {"PGD": attacks["PGD"]}, [0.01], progress=False)
    AttackProgress(disable=True, file=stream).attach(ev)
    ev.run()
    assert stream.getvalue() == ""
