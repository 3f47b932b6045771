# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import warnings

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from monai_robust.attacks.pgd import PGD
from monai_robust.engines.events import RobustEvents
from monai_robust.engines.prepare_batch import AttackBatch
from tests.utils import SmallCNN

EPS = 0.05


def _data(n=16, batch=8, dims=2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 1) + (8,) * dims, generator=g)
    y = (x.flatten(1).mean(1) > 0.5).long()
    return [{"image": x[i : i + batch], "label": y[i : i + batch]} for i in range(0, n, batch)]


def _trainer(net, data, prepare, lr=0.0, **kwargs):
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SupervisedTrainer("cpu", 1, data, net, opt, torch.nn.CrossEntropyLoss(), prepare_batch=prepare,
                                 train_handlers=[prepare], decollate=False, **kwargs)


@pytest.mark.parametrize("ratio,dims", [(1.0, 2), (0.5, 2), (0.5, 3)])
def test_adversarial_inputs_reach_training_forward(ratio, dims):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 2)
    net.dropout.p = 0.0
    data = _data(dims=dims)
    prepare = AttackBatch(PGD(net, EPS, num_steps=3, bounds=(0.0, 1.0)), ratio=ratio)
    trainer = _trainer(net, data, prepare)
    seen = []  # (training flag, grad enabled, input) of every forward of the network
    net.register_forward_pre_hook(lambda m, a: seen.append((m.training, torch.is_grad_enabled(), a[0].detach())))
    events = []
    for ev in (RobustEvents.ATTACK_STARTED, RobustEvents.ATTACK_COMPLETED, IterationEvents.FORWARD_COMPLETED):
        trainer.add_event_handler(ev, lambda e, ev=ev: events.append(ev))
    grads = []
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED,
                              lambda e: grads.append([p.grad.clone() for p in net.parameters()]))
    trainer.run()

    assert events == [RobustEvents.ATTACK_STARTED, RobustEvents.ATTACK_COMPLETED, IterationEvents.FORWARD_COMPLETED] * 2
    train_inputs = [x for training, _, x in seen if training]
    assert len(train_inputs) == 2
    assert all(grad for training, grad, _ in seen if not training)  # crafting: eval mode, gradients on
    assert net.training  # MONAI trains in train mode; the attack restored the mode
    k = int(round(ratio * 8))
    for batch, x_in in zip(data, train_inputs):
        delta = x_in - batch["image"]
        assert float(delta[:k].abs().amax()) <= EPS + 1e-6 and float(delta[:k].abs().amax()) > EPS / 2
        assert float(x_in.min()) >= 0.0 and float(x_in.max()) <= 1.0
        assert torch.equal(x_in[k:], batch["image"][k:])  # the clean part is untouched
    # lr = 0: the parameter gradients are those of the training loss on the inputs trained on, nothing else
    for x_in, batch, g in zip(train_inputs, data, grads):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x_in), batch["label"]).backward()
        for p, gp in zip(net.parameters(), g):
            assert torch.allclose(p.grad, gp, atol=1e-6)


def test_ratio_zero_and_unattached():
    net = SmallCNN(2, 1, 2)
    data = _data()
    batch = AttackBatch(PGD(net, EPS, bounds=(0.0, 1.0)), ratio=0.0)(data[0])
    assert torch.equal(batch[0], data[0]["image"])
    adv = AttackBatch(PGD(net, EPS, num_steps=2, bounds=(0.0, 1.0)))(data[0], "cpu")  # no engine: no events, works
    assert float((adv[0] - data[0]["image"]).abs().amax()) > 0


def test_bad_input():
    net = SmallCNN(2, 1, 2)
    attack = PGD(net, EPS, bounds=(0.0, 1.0))
    for ratio in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="ratio"):
            AttackBatch(attack, ratio=ratio)
    with pytest.raises(ValueError, match="attack"):
        AttackBatch("pgd")
    other = PGD(SmallCNN(2, 1, 2).to("meta"), EPS, bounds=(0.0, 1.0))  # a model on another device
    with pytest.raises(ValueError, match="attack's network is on meta but the batch is on cpu"):
        AttackBatch(other)(_data()[0], "cpu")
    prepare = AttackBatch(other)
    trainer = _trainer(net, _data(), prepare)  # attach() ran before MONAI set trainer.network: checked at call
    with pytest.raises(ValueError, match="meta"):
        trainer.run()
    with pytest.raises(ValueError, match="trained network"):
        prepare.attach(trainer)
    assert trainer.has_registered_events(RobustEvents.ATTACK_STARTED)
