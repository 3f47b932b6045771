# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""engines.budget: the standard AutoAttack/Square budget is read from their defaults; a reduced one says what is
reduced; planned passes per call; the evaluator's results carry each attack's budget."""

from __future__ import annotations

import torch

from monai_robust.attacks import CW, FGSM, PGD, AutoAttack, Square
from monai_robust.engines.budget import attack_budget, planned_passes, standard_budget
from monai_robust.engines.evaluator import EvaluationOptions, RobustnessEvaluator
from tests.utils import SmallCNN


def test_standard_and_reduced_autoattack():
    net = SmallCNN(2, 1, 2, width=4)
    full = attack_budget(AutoAttack(net))
    assert full["standard"] and full["reduced"] == [] and full["num_steps"] == 100 and full["num_queries"] == 5000
    assert full["standard_budget"] == standard_budget(AutoAttack(net))
    small = attack_budget(AutoAttack(net, num_steps=10, num_queries=100))
    assert not small["standard"] and small["reduced"] == ["num_steps 10 < 100", "num_queries 100 < 5000"]
    partial = attack_budget(AutoAttack(net, attacks=("apgd-ce", "square")))
    assert not partial["standard"] and partial["reduced"] == ["without apgd-t, fab-t"]
    assert attack_budget(Square(net, num_queries=5000))["standard"]
    assert attack_budget(Square(net, num_queries=50))["reduced"] == ["num_queries 50 < 5000"]
    pgd = attack_budget(PGD(net, num_steps=7))
    assert pgd == {"num_steps": 7, "num_restarts": 1} and standard_budget(PGD(net)) is None


def test_planned_passes():
    net = SmallCNN(2, 1, 2, width=4)
    assert planned_passes(FGSM(net)) == 1
    assert planned_passes(PGD(net, num_steps=7, num_restarts=2)) == 14
    assert planned_passes(Square(net, num_queries=30)) == 30
    aa = AutoAttack(net, num_steps=10, num_queries=100)
    assert planned_passes(aa, num_classes=2) == 10 + 10 + 10 + 100  # one target with two classes
    assert planned_passes(aa, num_classes=20) == 10 + 90 + 90 + 100  # at most 9 targets
    assert planned_passes(CW(net, bounds=(0.0, 1.0), num_steps=5, binary_search_steps=3)) == 15


def test_results_carry_the_budget():
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2, width=4).eval()
    x = torch.rand(4, 1, 8, 8)
    data = [{"image": x, "label": net(x).argmax(1).detach()}]
    attacks = {"AutoAttack": AutoAttack(net, num_steps=2, num_queries=3, bounds=(0.0, 1.0)),
               "PGD": PGD(net, num_steps=2, bounds=(0.0, 1.0))}
    ev = RobustnessEvaluator("cpu", data, net, attacks, [0.02], progress=False,
                             options=EvaluationOptions(noise_control=False, num_examples=0))
    ev.run()
    budget = ev.results["attacks"]["AutoAttack"]["budget"]
    assert budget["num_steps"] == 2 and budget["num_queries"] == 3 and budget["standard"] is False
    assert ev.results["attacks"]["PGD"]["budget"] == {"num_steps": 2, "num_restarts": 1}
