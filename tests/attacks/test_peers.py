# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Cross-checks against torchattacks 3.5.1 and ART 1.20.1 on the trained PneumoniaMNIST model.

FGSM and BIM must equal the peers' outputs; PGD must be as strong as torchattacks'; CW and DeepFool must fool at
least as many samples as the peers at a median L2 no larger. Each test is skipped (with the reason) only when its
peer cannot be imported.
"""

from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.base import is_adversarial
from monai_robust.attacks.cw import CW
from monai_robust.attacks.deepfool import DeepFool
from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import BIM, PGD

EPS, STEP, STEPS = 0.03, 0.005, 10


def _torchattacks():
    return pytest.importorskip("torchattacks", reason="torchattacks is not installed (pip install torchattacks)")


def _art_classifier(net: torch.nn.Module):
    pytest.importorskip("art", reason="ART is not installed (pip install adversarial-robustness-toolbox)")
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        net, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=2, clip_values=(0.0, 1.0)
    )


def _success_and_median(net, x, y, adv) -> tuple[float, float]:
    adv = torch.as_tensor(adv)
    with torch.no_grad():
        fooled = is_adversarial(net(adv), y)
    return float(fooled.float().mean()), float(lp_norm(adv - x, 2)[fooled].median())


def test_fgsm_equals_peers(pneumonia_model, pneumonia_correct):
    net, x, y = pneumonia_model, pneumonia_correct["all_images"], pneumonia_correct["all_labels"]
    ours = FGSM(net, EPS, bounds=(0.0, 1.0))(x, y)
    assert float((ours - x).abs().max()) > EPS / 2  # it did something
    ta = _torchattacks().FGSM(net, eps=EPS)(x, y)
    assert float((ours - ta).abs().max()) <= 1e-5
    from art.attacks.evasion import FastGradientMethod

    art = FastGradientMethod(_art_classifier(net), eps=EPS, batch_size=len(x)).generate(x.numpy(), y.numpy())
    assert float((ours - torch.from_numpy(art)).abs().max()) <= 1e-5


def test_bim_equals_peers(pneumonia_model, pneumonia_correct):
    """ART's BasicIterativeMethod (PGD with ``num_random_init=0``: step, clip to the box, project onto the ball)
    needs no special configuration: on intervals, clip-then-project equals our project-then-clip."""
    net, x, y = pneumonia_model, pneumonia_correct["all_images"], pneumonia_correct["all_labels"]
    ours = BIM(net, EPS, step_size=STEP, num_steps=STEPS, bounds=(0.0, 1.0))(x, y)
    ta = _torchattacks().BIM(net, eps=EPS, alpha=STEP, steps=STEPS)(x, y)
    assert float((ours - ta).abs().max()) <= 1e-5
    from art.attacks.evasion import BasicIterativeMethod

    art = BasicIterativeMethod(
        _art_classifier(net), eps=EPS, eps_step=STEP, max_iter=STEPS, batch_size=len(x), verbose=False
    ).generate(x.numpy(), y.numpy())
    assert float((ours - torch.from_numpy(art)).abs().max()) <= 1e-5


def test_pgd_robust_accuracy(pneumonia_model, pneumonia_correct):
    net, x, y = pneumonia_model, pneumonia_correct["all_images"], pneumonia_correct["all_labels"]
    ta = _torchattacks()
    attack = PGD(net, EPS, step_size=2.5 * EPS / 20, num_steps=20, bounds=(0.0, 1.0))
    attack.set_random_state(0)
    torch.manual_seed(0)
    theirs = ta.PGD(net, eps=EPS, alpha=2.5 * EPS / 20, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).float().mean())
        ours_acc = float((~is_adversarial(net(attack(x, y)), y)).float().mean())
        theirs_acc = float((~is_adversarial(net(theirs), y)).float().mean())
    assert ours_acc < clean - 0.2  # the model is not robust: PGD must find that
    assert ours_acc <= theirs_acc + 0.02


@pytest.fixture(scope="module")
def cw_ours(pneumonia_model, pneumonia_correct):
    """Our CW on 48 correctly classified test images: 5 binary-search rounds of 100 Adam steps (lr 0.01) from
    c = 1, i.e. torchattacks' fixed c = 1, 100-step run plus the search over c of the paper."""
    x, y = pneumonia_correct["images"][:48], pneumonia_correct["labels"][:48]
    attack = CW(pneumonia_model, bounds=(0.0, 1.0), num_steps=100, binary_search_steps=5, initial_const=1.0)
    return x, y, attack(x, y)


def test_cw_vs_torchattacks(pneumonia_model, cw_ours):
    net, (x, y, ours) = pneumonia_model, cw_ours
    theirs = _torchattacks().CW(net, c=1.0, kappa=0.0, steps=100, lr=0.01)(x, y)
    rate, med = _success_and_median(net, x, y, ours)
    peer_rate, peer_med = _success_and_median(net, x, y, theirs)
    assert rate >= peer_rate and med <= peer_med


def test_cw_vs_art(pneumonia_model, cw_ours):
    """ART's CarliniL2Method at its defaults (10 rounds of 10 line-searched gradient steps from c = 0.01) on the
    first 16 of those images, which takes longer than our 5 x 100 steps on all 48."""
    net, (x, y, ours) = pneumonia_model, cw_ours
    clf = _art_classifier(net)
    from art.attacks.evasion import CarliniL2Method

    x, y, ours = x[:16], y[:16], ours[:16]
    theirs = CarliniL2Method(clf, batch_size=16, verbose=False).generate(x.numpy(), y.numpy())
    rate, med = _success_and_median(net, x, y, ours)
    peer_rate, peer_med = _success_and_median(net, x, y, theirs)
    assert rate >= peer_rate and med <= peer_med


def test_deepfool_vs_peers(pneumonia_model, pneumonia_correct):
    """Same settings for all three (50 iterations, overshoot 0.02, all classes). torchattacks' DeepFool is the same
    algorithm step for step (outputs agree to ~1e-6), so its median may only differ by float rounding."""
    net = pneumonia_model
    x, y = pneumonia_correct["images"][:64], pneumonia_correct["labels"][:64]
    rate, med = _success_and_median(net, x, y, DeepFool(net, num_steps=50, overshoot=0.02, bounds=(0.0, 1.0))(x, y))
    ta_rate, ta_med = _success_and_median(net, x, y, _torchattacks().DeepFool(net, steps=50, overshoot=0.02)(x, y))
    assert rate >= ta_rate and med <= ta_med * (1 + 1e-4)
    from art.attacks.evasion import DeepFool as ArtDeepFool

    art = ArtDeepFool(_art_classifier(net), max_iter=50, epsilon=0.02, nb_grads=10, batch_size=64, verbose=False)
    art_rate, art_med = _success_and_median(net, x, y, art.generate(x.numpy(), y.numpy()))
    assert rate >= art_rate and med <= art_med
