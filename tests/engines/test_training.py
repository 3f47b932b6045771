# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import warnings

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import PGD
from monai_robust.engines.events import RobustEvents
from monai_robust.engines.training import (
    AdversarialKeys,
    FastATIteration,
    PGDATIteration,
    TRADESIteration,
    UAPIteration,
    adversarial_metrics,
    adversarial_output_transform,
    trades_kl,
)
from tests.utils import SmallCNN

EPS = 0.05
BOUNDS = (0.0, 1.0)


def _data(n=16, batch=8, dims=2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 1) + (8,) * dims, generator=g)
    y = (x.flatten(1).mean(1) > 0.5).long()
    return [{"image": x[i : i + batch], "label": y[i : i + batch]} for i in range(0, n, batch)]


def _net(dims=2):
    torch.manual_seed(0)
    net = SmallCNN(dims, 1, 2)
    net.dropout.p = 0.0  # deterministic training forward, so that losses can be recomputed
    return net


def _trainer(net, data, iteration, lr=0.0, epochs=1, **kwargs):
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    kwargs.setdefault("decollate", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SupervisedTrainer("cpu", epochs, data, net, opt, torch.nn.CrossEntropyLoss(), iteration_update=iteration,
                                 train_handlers=[iteration], **kwargs)


ITERATIONS = {
    "pgd_at": lambda net: PGDATIteration(PGD(net, EPS, num_steps=3, bounds=BOUNDS)),
    "pgd_at_mixed": lambda net: PGDATIteration(PGD(net, EPS, num_steps=3, bounds=BOUNDS), clean_weight=0.5),
    "trades": lambda net: TRADESIteration(PGD(net, EPS, num_steps=3, bounds=BOUNDS), beta=3.0),
    "fast_at": lambda net: FastATIteration(net, EPS, bounds=BOUNDS),
}


def _expected_loss(kind, net, x, adv, y):
    ce = torch.nn.functional.cross_entropy
    if kind == "trades":
        clean = net(x)
        return ce(clean, y) + 3.0 * trades_kl(net(adv), torch.softmax(clean, 1)).mean()
    if kind == "pgd_at_mixed":
        return 0.5 * ce(net(adv), y) + 0.5 * ce(net(x), y)
    return ce(net(adv), y)


@pytest.mark.parametrize("kind,dims", [(k, 2) for k in ITERATIONS] + [("trades", 3)])
def test_iteration(kind, dims):
    net = _net(dims)
    data = _data(dims=dims)
    iteration = ITERATIONS[kind](net)
    trainer = _trainer(net, data, iteration)
    seen, events, grads, outputs = [], [], [], []
    net.register_forward_pre_hook(lambda m, a: seen.append((m.training, torch.is_grad_enabled())))
    for ev in (RobustEvents.ATTACK_STARTED, RobustEvents.ATTACK_COMPLETED, IterationEvents.FORWARD_COMPLETED):
        trainer.add_event_handler(ev, lambda e, ev=ev: events.append(ev))
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED,
                              lambda e: grads.append([p.grad.clone() for p in net.parameters()]))
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()

    assert events == [RobustEvents.ATTACK_STARTED, RobustEvents.ATTACK_COMPLETED, IterationEvents.FORWARD_COMPLETED] * 2
    assert net.training and any(not t and g for t, g in seen)  # crafting: eval mode with gradients
    assert any(t for t, _ in seen) and all(g for t, g in seen if t)  # training forwards: train mode
    for batch, out, g in zip(data, outputs, grads):
        x, y, adv = batch["image"], batch["label"], out["image"]
        assert float(lp_norm(adv - x, "inf").max()) <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
        assert float((adv - x).abs().amax()) > EPS / 4
        assert set(AdversarialKeys) <= set(out) and 0.0 <= out["adv_acc"] <= 1.0 and 0.0 <= out["clean_acc"] <= 1.0
        net.zero_grad()
        loss = _expected_loss(kind, net, x, adv, y)
        assert torch.allclose(out["loss"], loss, atol=1e-5)
        loss.backward()  # lr = 0: the parameter gradients are exactly the training loss's
        for p, gp in zip(net.parameters(), g):
            assert torch.allclose(p.grad, gp, atol=1e-5)


def test_trades_maximises_kl_and_fast_at_settings():
    net = _net()
    batch = _data()[0]
    x = batch["image"]
    it = TRADESIteration(PGD(net, EPS, num_steps=5, bounds=BOUNDS), beta=6.0)
    trainer = _trainer(net, [batch], it)
    trainer.run()
    adv = trainer.state.output["image"]
    with torch.no_grad():
        p = torch.softmax(net.eval()(x), 1)
        noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * EPS).clamp(0, 1)
        assert float(trades_kl(net(adv), p).mean()) > 2 * float(trades_kl(net(noise), p).mean())
    assert it.attack.loss is not trades_kl and not it.attack.early_stop  # the user's attack is left as it was
    fast = FastATIteration(net, 0.04, alpha=1.25)
    assert fast.attack.num_steps == 1 and fast.attack.random_start and abs(fast.attack.step_for(0.04) - 0.05) < 1e-12


def test_amp_crafts_in_fp32():
    if not torch.amp.is_autocast_available("cpu"):
        pytest.skip("no CPU autocast in this torch build")
    net = _net()
    dtypes = []
    net.features[0].register_forward_hook(lambda m, a, out: dtypes.append((m.training, out.dtype)))
    trainer = _trainer(net, _data(), PGDATIteration(PGD(net, EPS, num_steps=2, bounds=BOUNDS)), amp=True, lr=0.1)
    trainer.run()
    assert {d for t, d in dtypes if not t} == {torch.float32}  # crafting and clean metrics
    assert {d for t, d in dtypes if t} == {torch.bfloat16}  # the training forward under autocast
    assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"], dtype=torch.float32))


def test_accumulation_steps():
    net = _net()
    trainer = _trainer(net, _data(n=32), PGDATIteration(PGD(net, EPS, num_steps=1, bounds=BOUNDS)), lr=0.1,
                       accumulation_steps=2)
    steps = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(trainer.state.iteration), original(*a, **k))[1]
    trainer.run()
    assert steps == [2, 4]


def test_metrics_and_tensorboard(tmp_path):
    from monai.handlers import TensorBoardStatsHandler
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    net = _net()
    metrics = adversarial_metrics()
    it = FastATIteration(net, EPS, bounds=BOUNDS)
    trainer = _trainer(net, _data(), it, lr=0.01, decollate=True, key_train_metric={"adv_acc": metrics.pop("adv_acc")},
                       additional_metrics=metrics)
    TensorBoardStatsHandler(log_dir=str(tmp_path), output_transform=adversarial_output_transform).attach(trainer)
    trainer.run()
    assert set(AdversarialKeys) <= set(trainer.state.metrics)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"loss", "clean_loss", "adv_loss", "clean_acc", "adv_acc"} <= set(acc.Tags()["scalars"])


def test_uap_iteration():
    universal = pytest.importorskip("monai_robust.attacks.universal")
    net = _net()
    data = _data()
    fit_images = torch.cat([b["image"] for b in data])
    fitter = universal.SGDUAP(net, 0.1, lp="inf", bounds=BOUNDS, max_passes=1, batch_size=8)
    it = UAPIteration(fitter, fit_images, mix=1.0)
    trainer = _trainer(net, data, it, lr=0.01, epochs=2)
    inputs = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: inputs.append(e.state.output["image"]))
    trainer.run()
    assert len(it.fit_rates) == 2 and "uap_fit_rate" in trainer.state.metrics  # one refit per epoch
    delta = inputs[-1] - data[-1]["image"]
    assert float(delta.abs().amax()) <= 0.1 + 1e-6 and float(delta.abs().amax()) > 0
    assert net.training


def test_bad_input():
    net = _net()
    attack = PGD(net, EPS, bounds=BOUNDS)
    with pytest.raises(ValueError, match="clean_weight"):
        PGDATIteration(attack, clean_weight=1.0)
    with pytest.raises(ValueError, match="beta"):
        TRADESIteration(attack, beta=0.0)
    with pytest.raises(ValueError, match="Attack"):
        TRADESIteration(lambda x, y: x)
    with pytest.raises(ValueError, match="untargeted"):
        TRADESIteration(PGD(net, EPS, targeted=True))
    with pytest.raises(ValueError, match="alpha"):
        FastATIteration(net, EPS, alpha=0.0)
    with pytest.raises(ValueError, match="attack"):
        PGDATIteration(None)
    with pytest.raises(ValueError, match="fitter"):
        UAPIteration(attack, torch.zeros(1, 1, 8, 8))
    other = PGDATIteration(PGD(SmallCNN(2, 1, 2).to("meta"), EPS, bounds=BOUNDS))
    trainer = _trainer(net, _data(), other)
    with pytest.raises(ValueError, match="meta"):
        trainer.run()
    with pytest.raises(ValueError, match="two logits"):
        _trainer(SmallCNN(2, 1, 1), _data(), TRADESIteration(PGD(SmallCNN(2, 1, 1), EPS, bounds=BOUNDS))).run()
