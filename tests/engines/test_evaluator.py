# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_robust.attacks.autoattack import AutoAttack
from monai_robust.attacks.base import Attack, BoundedAttack, MinimizationAttack, NonFiniteError
from monai_robust.attacks.cw import CW
from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import BIM, PGD
from monai_robust.attacks.square import Square
from monai_robust.engines.evaluator import EvaluationOptions, ProbeOptions, RobustnessEvaluator
from monai_robust.handlers.report import RobustnessReport
from monai_robust.report.table import key_label
from tests.utils import SmallCNN, train_classifier

NO_PROBES = ProbeOptions(enabled=False)

EPS = [0.02, 0.05, 0.1]


def blobs(n: int, dims: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright (label 1) or dark (label 0) blob in the centre of noisy images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    grid = torch.meshgrid(*[torch.linspace(-1, 1, size)] * dims, indexing="ij")
    blob = torch.exp(-sum(c**2 for c in grid) / 0.2)
    x = 0.35 + 0.1 * torch.randn((n, 1) + (size,) * dims, generator=g)
    x = x + (y.float() * 2 - 1).reshape((-1,) + (1,) * (dims + 1)) * 0.2 * blob
    return x.clamp(0, 1), y


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    return [{"image": x[i : i + batch_size], "label": y[i : i + batch_size]} for i in range(0, x.shape[0], batch_size)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread avoids oversubscribing the 2 shared CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def setup(request):
    dims = request.param
    torch.manual_seed(0)
    x, y = blobs(128, dims, 8, seed=0)
    net = SmallCNN(dims, 1, 2, width=8)
    train_classifier(net, x, y, epochs=10, batch_size=32, lr=1e-2)
    xt, yt = blobs(64, dims, 8, seed=1)
    return dims, net, xt, yt


def attacks_for(net: nn.Module) -> dict:
    return {"fgsm": FGSM(net, bounds=(0.0, 1.0)), "pgd": PGD(net, num_steps=5, bounds=(0.0, 1.0))}


def test_evaluator_2d_3d_properties(setup, tmp_path):
    dims, net, x, y = setup
    report = RobustnessReport(tmp_path, html=False, console=False)
    ev = RobustnessEvaluator("cpu", loader(x, y), net, attacks_for(net), EPS, val_handlers=[report], progress=True)
    ev.run()
    r = ev.results
    assert r["meta"]["complete"] and r["meta"]["n"] == 64
    clean = r["clean"]["accuracy"]
    assert clean > 0.8  # the tiny model learned the task
    for name in ("fgsm", "pgd"):
        rows = r["attacks"][name]["results"]
        assert [row["eps"] for row in rows] == EPS and all(row["status"] == "ok" for row in rows)
        accs = [row["accuracy"] for row in rows]
        assert all(a <= clean + 1e-9 for a in accs)
        assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:]))  # nested budgets
        for row in rows:
            assert row["max_norm"] <= row["eps"] * (1 + 1e-5) + 1e-7 and row["out_of_bounds"] == 0
            assert 0 <= row["attack_success_rate"] <= 1
            assert row["performance_retained"]["accuracy"] == pytest.approx(row["accuracy"] / clean)
        # retiring: fewer samples attacked at each larger eps
        attacked = [row["n_attacked"] for row in rows]
        assert attacked[0] == round(clean * 64) and all(b <= a for a, b in zip(attacked, attacked[1:]))
    # PGD is at least as strong as FGSM and the attacks beat noise of the same norm
    assert all(p["accuracy"] <= f["accuracy"] + 1 / 64 for p, f in zip(r["attacks"]["pgd"]["results"], r["attacks"]["fgsm"]["results"]))
    assert r["attacks"]["pgd"]["results"][-1]["accuracy"] < clean
    status = {c["name"]: c["status"] for c in r["validity"]}
    assert status["gradients"] == "pass" and status["randomized_model"] == "pass" and status["budget_and_bounds"] == "pass"
    assert status["unbounded_eps"] == "pass" and status["monotone_in_eps"] == "skipped"
    # perceptibility of successful adversarial examples: L-inf within eps, PSNR finite, SSIM <= 1
    p = r["attacks"]["pgd"]["results"][-1]["perceptibility"]
    assert p["linf"]["max"] <= EPS[-1] + 1e-6 and p["ssim"]["max"] <= 1 + 1e-6 and math.isfinite(p["psnr_db"]["mean"])
    # metrics for MONAI handlers, JSON written and strict
    assert ev.state.metrics[f"{key_label('pgd', EPS[0])}/accuracy"] == r["attacks"]["pgd"]["results"][0]["accuracy"]
    data = json.loads((tmp_path / "robustness.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert data["attacks"]["pgd"]["results"][0]["accuracy"] == pytest.approx(r["attacks"]["pgd"]["results"][0]["accuracy"])
    # examples keep a 2D view (middle slice of 3D)
    assert ev.examples["images"].ndim == 4 and ev.examples["adversarial"][("pgd", EPS[-1])]["images"].ndim == 4


def _plain_loop(attack: Attack, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per-sample fooled mask of calling an attack directly, batch by batch."""
    attack.set_random_state(0)
    wrong = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        with torch.no_grad():
            wrong.append(net(attack(xb, yb)).argmax(1) != yb)
    return torch.cat(wrong)


def test_pneumonia_matches_plain_loop(pneumonia, pneumonia_model):
    """Same seed, no retiring: the evaluator's robust accuracy equals the attacks called directly."""
    net = pneumonia_model
    x, y = pneumonia["test_images"][:96], pneumonia["test_labels"][:96]
    eps = [0.5 / 255, 2 / 255]
    ev = RobustnessEvaluator(
        "cpu", loader(x, y), net,
        {"fgsm": FGSM(net, bounds=(0.0, 1.0)), "pgd": PGD(net, num_steps=5, bounds=(0.0, 1.0))}, eps,
        options=EvaluationOptions(reuse_smaller_eps=False, early_stop=False, noise_control=False), probe_options=NO_PROBES,
        seed=0,
    )
    ev.run()
    for name, cls, kw in (("fgsm", FGSM, {}), ("pgd", PGD, {"num_steps": 5})):
        for e, row in zip(eps, ev.results["attacks"][name]["results"]):
            wrong = _plain_loop(cls(net, e, bounds=(0.0, 1.0), **kw), net, x, y, 32)
            assert row["accuracy"] == pytest.approx(1 - wrong.float().mean().item())
    # retiring + early stop with a deterministic attack: broken at eps = broken clean or at any eps' <= eps
    ev = RobustnessEvaluator(
        "cpu", loader(x, y), net, {"bim": BIM(net, num_steps=5, bounds=(0.0, 1.0))}, eps,
        options=EvaluationOptions(noise_control=False), probe_options=NO_PROBES, seed=0,
    )
    ev.run()
    with torch.no_grad():
        broken = net(x).argmax(1) != y
    for e, row in zip(eps, ev.results["attacks"]["bim"]["results"]):
        broken = broken | _plain_loop(BIM(net, e, num_steps=5, bounds=(0.0, 1.0), early_stop=True), net, x, y, 32)
        assert row["accuracy"] == pytest.approx(1 - broken.float().mean().item(), abs=1.01 / 96)


class Boom(BoundedAttack):
    def perturb(self, images, labels, eps):
        raise RuntimeError("boom: this attack is broken")


def test_failing_attack_keeps_the_others(setup, tmp_path):
    dims, net, x, y = setup
    attacks = dict(attacks_for(net), boom=Boom(net, bounds=(0.0, 1.0)))
    ev = RobustnessEvaluator(
        "cpu", loader(x, y), net, attacks, EPS, probe_options=NO_PROBES, val_handlers=[RobustnessReport(tmp_path, html=False, console=False)]
    )
    ev.run()
    r = json.loads((tmp_path / "robustness.json").read_text())
    assert r["attacks"]["boom"]["status"] == "failed"
    assert all(row["status"] == "failed" and "boom" in row["error"] for row in r["attacks"]["boom"]["results"])
    assert all(row["status"] == "ok" for row in r["attacks"]["pgd"]["results"])
    assert any("boom" in e["error"] for e in r["errors"])


def test_minimal_attack_runs_once_and_thresholds(setup):
    """A minimisation attack (here a stand-in running L2 PGD at a large budget) is crafted once and thresholded."""
    dims, net, x, y = setup
    calls = []

    class Minimal(MinimizationAttack):
        def perturb(self, images, labels):
            calls.append(images.shape[0])
            self.last_progress = [0.5, 1.0]
            return PGD(net, 1.0, lp=2, step_size=0.5, num_steps=5, bounds=(0.0, 1.0))(images, labels)

    ev = RobustnessEvaluator(
        "cpu", loader(x, y), net, {"minimal": Minimal(net, lp=2, bounds=(0.0, 1.0))},
        {"minimal": [0.5, 1.0, None]}, probe_options=NO_PROBES,
    )
    ev.run()
    entry = ev.results["attacks"]["minimal"]
    rows = entry["results"]
    assert len(calls) == 2 and entry["kind"] == "minimal" and entry["single_run"]
    accs = [row["accuracy"] for row in rows]
    assert [row["eps"] for row in rows] == [0.5, 1.0, math.inf] and accs[0] >= accs[1] >= accs[2]
    assert rows[0]["max_norm"] <= 0.5 + 1e-5
    assert entry["success_by_step"] == [0.5, 1.0]  # the search's progress, averaged over the attacked samples


class Rounded(nn.Module):
    """Gradient masking: the input is quantised by a non-differentiable round()."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class AlwaysDropout(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(F.dropout(x, 0.5, training=True))


def test_validity_checks_fire(setup):
    dims, net, x, y = setup
    masked = Rounded(net).eval()
    ev = RobustnessEvaluator("cpu", loader(x, y), masked, attacks_for(masked), EPS)
    ev.run()
    status = {c["name"]: c["status"] for c in ev.results["validity"]}
    assert status["gradients"] == "fail" and status["unbounded_eps"] == "fail"
    assert ev.results["probes"]["gradients"]["zero_margin_fraction"] == 1.0
    noisy = AlwaysDropout(net).eval()
    ev = RobustnessEvaluator("cpu", loader(x, y), noisy, {"fgsm": FGSM(noisy, bounds=(0.0, 1.0))}, EPS)
    ev.run()
    check = next(c for c in ev.results["validity"] if c["name"] == "randomized_model")
    assert check["status"] == "fail" and "EOT" in check["message"]


def test_uap_control_detector_and_transfer(setup):
    dims, net, x, y = setup
    torch.manual_seed(1)
    surrogate = SmallCNN(dims, 1, 2, width=8).eval()
    delta = torch.zeros((1,) + tuple(x.shape[2:]))
    delta[(0,) + (slice(2, 6),) * dims] = 0.3  # brightens the blob: pushes towards class 1

    def detector(images):
        return images.reshape(images.shape[0], -1).std(dim=1)

    ev = RobustnessEvaluator(
        "cpu", loader(x, y), net,
        {"pgd": PGD(net, num_steps=5, bounds=(0.0, 1.0)), "transfer": PGD(surrogate, num_steps=5, bounds=(0.0, 1.0))},
        EPS, uaps={"blob": delta}, detector=detector,
    )
    ev.run()
    r = ev.results
    assert r["attacks"]["transfer"]["reference"] and not r["attacks"]["pgd"]["reference"]
    u = r["uaps"]["blob"]
    assert 0 <= u["perturbed"]["fooling_rate"] <= 1 and 0 <= u["control"]["fooling_rate"] <= 1
    assert u["perturbed"]["fooling_rate"] > u["control"]["fooling_rate"]
    assert u["eps"] == pytest.approx(float(lp_norm(delta.reshape(1, -1), 2)))
    det = r["attacks"]["pgd"]["results"][-1]["detector"]
    assert 0 <= det["auc"] <= 1 and sum(det["histogram"]["clean"]) == 64
    assert r["detector"]["clean_scores"]["n"] == 64


def test_exception_writes_partial_results(setup, tmp_path):
    dims, net, x, y = setup
    batches = loader(x, y, 16)
    batches[2] = {"image": batches[2]["image"], "label": torch.full((16,), 5)}  # a bad label set mid-run
    ev = RobustnessEvaluator(
        "cpu", batches, net, attacks_for(net), EPS, probe_options=NO_PROBES,
        val_handlers=[RobustnessReport(tmp_path, html=False, console=False)],
    )
    with pytest.raises(ValueError, match="label 5 does not match the model"):
        ev.run()
    r = json.loads((tmp_path / "robustness.json").read_text())
    assert r["meta"]["complete"] is False and r["meta"]["n"] == 32
    assert r["attacks"]["pgd"]["results"][0]["status"] == "ok"


class NaNNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * torch.nan


def bad_cases(net, x, y):
    return [
        ("empty", ("cpu", [], net, attacks_for(net), EPS), {}, "empty"),
        ("attack without eps", ("cpu", loader(x, y), net, attacks_for(net), None), {}, "give its eps"),
        ("unbounded eps for a bounded attack", ("cpu", loader(x, y), net, {"f": FGSM(net, 0.1, bounds=(0, 1))}, {"f": [None]}), {}, "only for CW"),
        ("targeted", ("cpu", loader(x, y), net, {"f": FGSM(net, bounds=(0, 1), targeted=True)}, EPS), {}, "targeted"),
        ("eps in other units", ("cpu", loader(x, y), net, {"f": FGSM(net, bounds=(0, 1))}, [8.0]), {}, "model-input units"),
        ("not an attack", ("cpu", loader(x, y), net, {"f": 3}, EPS), {}, "must be a monai_robust Attack"),
        ("reference unknown", ("cpu", loader(x, y), net, attacks_for(net), EPS), {"reference_attacks": ["x"]}, "not in attacks"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_bad_configuration(setup, case):
    dims, net, x, y = setup
    _, args, kwargs, match = bad_cases(net, x, y)[case]
    with pytest.raises(ValueError, match=match):
        RobustnessEvaluator(*args, **kwargs)


def test_bad_data_refused_on_first_batch(setup):
    dims, net, x, y = setup
    cases = [
        (loader(x * 255, y), net, "outside the bounds"),  # data in 0-255, attack bounds 0-1
        (loader(x / 255, y), net, "other units"),  # data in 0-1/255: bounds probably in other units
        (loader(x, y + 1), net, "does not match the model's outputs"),
        (loader(x, F.one_hot(y, 2)), net, "multi-label or one-hot"),
        (loader(x, y), NaNNet(net), "NaN/Inf logits"),
    ]
    for data, model, match in cases:
        ev = RobustnessEvaluator("cpu", data, model, {"fgsm": FGSM(model, bounds=(0.0, 1.0))}, EPS)
        with pytest.raises(ValueError, match=match):
            ev.run()


class RandomSearch(BoundedAttack):
    """A query-only L-inf attack for the masking check: the constant shifts ``±eps``, then random vertices of the
    ball; each sample keeps the first candidate that fools the model. No gradient is taken."""

    black_box = True

    def perturb(self, images, labels, eps):
        adv, done = images.clone(), torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        signs = [torch.ones_like(images), -torch.ones_like(images)]
        signs += [torch.randint(0, 2, images.shape, generator=self._generator).to(images) * 2 - 1 for _ in range(8)]
        with torch.no_grad():
            for s in signs:
                cand = (images + eps * s).clamp(*self.bounds)
                fooled = self.success(self.logits(cand, labels), labels) & ~done
                adv[fooled], done = cand[fooled], done | fooled
        return adv


def test_masking_check_fires_on_quantised_model_only(setup):
    """Rounding the input (no straight-through gradient) strands FGSM and PGD; the query-based attack is not fooled
    by it and beats them: "gradient masking suspected". On the plain model the check stays quiet."""
    dims, net, x, y = setup
    eps = [0.1, 0.2]
    verdicts = {}
    for name, model in (("plain", net), ("masked", Rounded(net).eval())):
        attacks = dict(attacks_for(model), search=RandomSearch(model, bounds=(0.0, 1.0)))
        ev = RobustnessEvaluator("cpu", loader(x, y), model, attacks, eps, probe_options=NO_PROBES, seed=0)
        ev.run()
        verdicts[name] = next(c for c in ev.results["validity"] if c["name"] == "gradient_masking")
        assert ev.results["attacks"]["search"]["black_box"] and ev.results["attacks"]["search"]["kind"] == "black-box"
    assert verdicts["plain"]["status"] == "pass"
    assert verdicts["masked"]["status"] == "fail" and "gradient masking suspected" in verdicts["masked"]["message"]



def test_masking_check_not_silenced_by_autoattack(setup):
    """AutoAttack holds Square, so its worst case is never weaker than Square's: the check must compare Square with
    the gradient attacks only, and still fire on the quantised model when AutoAttack is in the suite."""
    dims, net, x, y = setup
    model = Rounded(net).eval()
    attacks = dict(
        attacks_for(model),
        square=Square(model, num_queries=40, bounds=(0.0, 1.0)),
        autoattack=AutoAttack(model, attacks=("apgd-ce", "square"), num_steps=3, num_queries=40, bounds=(0.0, 1.0)),
    )
    ev = RobustnessEvaluator("cpu", loader(x, y), model, attacks, [0.2], probe_options=NO_PROBES, seed=0, progress=False)
    ev.run()
    entry = ev.results["attacks"]["autoattack"]
    assert entry["uses_black_box"] and entry["standard_suite"] and not entry["black_box"]
    verdict = next(c for c in ev.results["validity"] if c["name"] == "gradient_masking")
    assert verdict["status"] == "fail", verdict
    assert "autoattack" not in {v[4] for v in verdict["details"]["violations"]}


class NaNGradient(nn.Module):
    """Finite logits, NaN input gradients (``0 * sqrt(x - x.detach())``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + 0 * torch.sqrt(x - x.detach()).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("bad", [NaNNet, NaNGradient])
def test_nonfinite_model_raises_before_any_number(setup, tmp_path, bad):
    dims, net, x, y = setup
    model = bad(net).eval()
    report = RobustnessReport(tmp_path, html=False, console=False)
    attacks = {"pgd": PGD(model, num_steps=2, bounds=(0.0, 1.0)), "cw": CW(model, bounds=(0.0, 1.0), num_steps=2)}
    ev = RobustnessEvaluator("cpu", loader(x, y), model, attacks, EPS, val_handlers=[report])
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        ev.run()
    assert not ev.results and not (tmp_path / "robustness.json").exists()


def test_empty_batch_is_a_clear_error() -> None:
    """Issue 18, finding 6: an empty batch gave ``RuntimeError: min(): Expected reduction dim ...``."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    data = [{"image": torch.rand(0, 1, 8, 8), "label": torch.zeros(0, dtype=torch.long)}]
    ev = RobustnessEvaluator("cpu", data, net, {"fgsm": FGSM(net, eps=0.1)}, progress=False)
    with pytest.raises(ValueError, match="batch 1 of val_data_loader holds no image"):
        ev.run()
