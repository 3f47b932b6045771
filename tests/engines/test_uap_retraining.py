# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_robust.attacks.universal import SGDUAP
from monai_robust.engines.uap_retraining import uap_adversarial_retraining
from tests.utils import SmallCNN

BOUNDS = (0.0, 1.0)


def test_adversarial_retraining(pneumonia):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2)
    train = {"image": pneumonia["train_images"][:128], "label": pneumonia["train_labels"][:128]}
    test = {"image": pneumonia["test_images"][:64], "label": pneumonia["test_labels"][:64]}
    before = [p.detach().clone() for p in net.parameters()]
    fitter = SGDUAP(net, zeta=0.04, bounds=BOUNDS, max_passes=1, batch_size=64).set_random_state(0)
    report = uap_adversarial_retraining(
        fitter, train, torch.optim.Adam(net.parameters(), 1e-3), eval_source=test, rounds=1, mix=0.5
    )
    assert len(report.round_rates) == 1 and report.metric == "fooling_rate"
    assert all(0.0 <= r <= 1.0 for r in [report.fooling_rate_before, report.fooling_rate_after, *report.round_rates])
    assert report.clean_accuracy_before is not None and report.clean_accuracy_after is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # fine-tuned in place
    assert net.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="no labels"):
        uap_adversarial_retraining(fitter, train["image"], torch.optim.SGD(net.parameters(), 0.1), eval_source=test)


def _run(seed: int, source_kind: str, rounds: int = 2, epochs: int = 2):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2)
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    y = (x.flatten(1).mean(1) > 0.5).long()
    train = {"image": x, "label": y}
    if source_kind == "loader":
        train = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(16)]), batch_size=8)
    fitter = SGDUAP(net, zeta=0.05, bounds=BOUNDS, max_passes=1, batch_size=8).set_random_state(0)
    steps = []
    opt = torch.optim.SGD(net.parameters(), 0.05)
    opt.register_step_post_hook(lambda *_: steps.append(1))
    report = uap_adversarial_retraining(fitter, train, opt, eval_source=x, rounds=rounds, epochs=epochs, seed=seed)
    return report, [p.detach().clone() for p in net.parameters()], len(steps)


@pytest.mark.parametrize("source_kind", ["mapping", "loader"])
def test_rounds_epochs_and_seed(source_kind):
    report, params, steps = _run(0, source_kind)
    assert len(report.round_rates) == 2  # one UAP refit per round of `epochs` epochs
    assert steps == 2 * 2 * 2  # rounds * epochs * batches, on MONAI's SupervisedTrainer
    assert report.clean_accuracy_before is None  # eval_source without labels
    again, params2, _ = _run(0, source_kind)
    assert again == report and all(torch.equal(a, b) for a, b in zip(params, params2))  # same seed, same result
    with pytest.raises(ValueError, match="rounds"):
        uap_adversarial_retraining(SGDUAP(SmallCNN(2, 1, 2), zeta=0.05), {}, None, eval_source=None, rounds=0)
    with pytest.raises(ValueError, match="fitter"):
        uap_adversarial_retraining(object(), {}, None, eval_source=None)
