# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_robust.attacks.fixed_perturbation import UAPResult, evaluate_uap, noise_control
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.universal import SGDUAP, IterativeUAP
from monai_robust.data.natural_images import NaturalImageDataset, photo_crops, sample_photo_paths
from monai_robust.metrics.universal import per_class_fooling_rate, per_class_targeted_success_rate
from tests.utils import SmallCNN

BOUNDS = (0.0, 1.0)


def _data(dims: int, n: int = 12, size: int | None = None) -> torch.Tensor:
    size = size or (12 if dims == 2 else 8)  # 3D convolutions are slow on CPU: keep volumes tiny
    return torch.rand((n, 1) + (size,) * dims, generator=torch.Generator().manual_seed(1))


def _net(dims: int, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN(dims, 1, classes).eval()


def _fitter(kind: str, net, **kw):
    if kind == "sgd":
        return SGDUAP(net, **kw)
    if kind == "deepfool":
        return IterativeUAP(net, inner="deepfool", inner_steps=5, **kw)
    return IterativeUAP(net, **kw)


def _rate(net, delta, x, target=None) -> float:
    ev = evaluate_uap(net, delta, x, bounds=BOUNDS, target=target)
    return ev["fooling_rate"] if target is None else ev["targeted_success_rate"]


# ---------------------------------------------------------------------------------------------------- budget
BUDGET_CASES = [(kind, lp, dims) for kind in ("sgd", "fgsm") for lp in (2, "inf") for dims in (2, 3)]
BUDGET_CASES += [("deepfool", 2, 2), ("deepfool", "inf", 2)]


@pytest.mark.parametrize("kind,lp,dims", BUDGET_CASES)
def test_budget_holds_2d_3d(kind, lp, dims):
    x, net = _data(dims, n=8 if dims == 3 else 12), _net(dims)
    res = _fitter(kind, net, zeta=0.05, lp=lp, bounds=BOUNDS, max_passes=2).set_random_state(0).fit(x)
    eps = 0.05 * float(lp_norm(x, lp).mean())
    assert res.eps == pytest.approx(eps, rel=1e-5) and res.zeta == 0.05 and res.lp == str(lp)
    assert res.delta.shape == x.shape[1:]
    assert float(lp_norm(res.delta[None], lp)) <= eps * (1 + 1e-5)
    assert 1 <= len(res.curve) <= 2 and all(0.0 <= r <= 1.0 for r in res.curve)
    assert res.rate == pytest.approx(_rate(net, res.delta, x))  # the curve is the exact rate on the fitting images


def test_absolute_eps_threat_model_and_reaches_budget():
    from monai_robust.attacks.base import ThreatModel

    x, net = _data(2), _net(2)
    res = SGDUAP(net, ThreatModel(0.03, "inf", BOUNDS), step_size=0.015, max_passes=3).set_random_state(0).fit(x)
    assert res.lp == "inf" and res.bounds == BOUNDS and res.zeta is None
    assert float(res.delta.abs().max()) == pytest.approx(0.03, rel=1e-5)  # sign steps end on the box


# ---------------------------------------------------------------------------------------------------- on real images
@pytest.fixture(scope="module")
def pneu(pneumonia, pneumonia_model):
    x, y = pneumonia["test_images"][:160], pneumonia["test_labels"][:160]
    return pneumonia_model, x, y


def _controls(net, delta, x, lp, target=None) -> list[float]:
    return [
        _rate(net, noise_control(delta, kind, lp, torch.Generator().manual_seed(s)), x, target)
        for kind in ("uniform", "gaussian")
        for s in (0, 1)
    ]


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_nontargeted_beats_same_norm_random_control(pneu, kind):
    net, x, _ = pneu
    res = _fitter(kind, net, zeta=0.04, lp=2, bounds=BOUNDS, max_passes=3, batch_size=16).set_random_state(0).fit(x)
    rate = _rate(net, res.delta, x)
    controls = _controls(net, res.delta, x, 2)
    # a binary model: a UAP pushing every image to one class fools at most the share predicted as the other (~0.7)
    assert rate >= 0.35 and max(controls) <= 0.2 and rate > max(controls) + 0.25


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_targeted_success_above_control(pneu, kind):
    net, x, _ = pneu
    fitter = _fitter(kind, net, zeta=0.04, lp=2, bounds=BOUNDS, target=0, max_passes=3, batch_size=16)
    res = fitter.set_random_state(0).fit(x)
    assert res.target == 0 and res.metric == "targeted_success_rate"
    rate = _rate(net, res.delta, x, target=0)
    assert rate >= 0.65 and rate > max(_controls(net, res.delta, x, 2, target=0)) + 0.3


def test_evaluate_per_class_and_metrics(pneu):
    net, x, y = pneu
    res = SGDUAP(net, zeta=0.04, bounds=BOUNDS, max_passes=1, target=0).set_random_state(0).fit(x)
    ev = evaluate_uap(net, res, {"image": x, "label": y}, bounds=BOUNDS, target=0)
    assert ev["n"] == 160 and ev["per_class_by"] == "label" and set(ev["per_class_fooling_rate"]) == {0, 1}
    with torch.no_grad():
        clean, adv = net(x).argmax(1), net(res.apply(x)).argmax(1)
    assert ev["fooling_rate"] == pytest.approx(float((clean != adv).float().mean()))
    assert ev["per_class_targeted_success_rate"][1] == pytest.approx(float((adv[y == 1] == 0).float().mean()))
    assert ev["clean_accuracy"] == pytest.approx(float((clean == y).float().mean()))
    assert evaluate_uap(net, res.delta, x, bounds=BOUNDS)["per_class_by"] == "prediction"


@pytest.mark.parametrize(
    "clean,adv,groups,expected",
    [
        ([0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 1, 1], {0: 0.5, 1: 1.0}),
        ([0, 1, 2], [0, 1, 2], [2, 2, 0], {0: 0.0, 2: 0.0}),
    ],
)
def test_per_class_fooling_rate(clean, adv, groups, expected):
    t = torch.tensor
    assert per_class_fooling_rate(t(clean), t(adv), t(groups)) == expected


def test_per_class_targeted_success_rate():
    t = torch.tensor
    assert per_class_targeted_success_rate(t([1, 1, 0, 1]), 1, t([0, 0, 1, 1])) == {0: 1.0, 1: 0.5}
    with pytest.raises(ValueError, match="one class per sample"):
        per_class_targeted_success_rate(t([1, 1]), 1, t([0]))


# ---------------------------------------------------------------------------------------------------- determinism, state
@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_same_seed_same_delta(kind):
    x, net = _data(2), _net(2)
    a = _fitter(kind, net, zeta=0.05, bounds=BOUNDS, max_passes=2, batch_size=4).set_random_state(3).fit(x)
    b = _fitter(kind, net, zeta=0.05, bounds=BOUNDS, max_passes=2, batch_size=4).set_random_state(3).fit(x)
    c = _fitter(kind, net, zeta=0.05, bounds=BOUNDS, max_passes=2, batch_size=4).set_random_state(4).fit(x)
    assert torch.equal(a.delta, b.delta) and a.curve == b.curve and a.seed == b.seed
    assert c.seed != a.seed


def test_model_state_restored():
    x, net = _data(2), _net(2)
    net.train()
    net.fc.weight.requires_grad_(False)
    SGDUAP(net, zeta=0.05, bounds=BOUNDS, max_passes=1).fit(x)
    assert net.training and net.features[0].weight.requires_grad and not net.fc.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------------------------------- sources
def test_dataloader_tuple_and_list_sources_agree():
    x, net = _data(2, n=8), _net(2)
    y = torch.arange(8) % 3
    loader = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(8)]), batch_size=4, shuffle=False)
    fit = lambda src: SGDUAP(net, zeta=0.05, bounds=BOUNDS, max_passes=2).set_random_state(0).fit(src)  # noqa: E731
    a, b, c = fit(loader), fit([(x[:4], y[:4]), (x[4:], y[4:])]), fit([x[:4], x[4:]])
    assert torch.allclose(a.delta, b.delta) and torch.allclose(b.delta, c.delta) and a.eps == pytest.approx(b.eps)


def _write_photos(folder, n: int = 6) -> None:
    from PIL import Image

    crops = photo_crops(n, 40, channels=3, generator=torch.Generator().manual_seed(0))
    for i, c in enumerate(crops):
        arr = (c.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"photo_{i}.{'png' if i % 2 else 'jpg'}")


@pytest.mark.skipif(not sample_photo_paths(), reason="matplotlib's sample photo is not installed")
def test_natural_image_folder_uap_beats_control(tmp_path, pneu):
    net, x, _ = pneu
    _write_photos(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = NaturalImageDataset(tmp_path, spatial_size=28, channels=1)
    assert len(ds) == 6 and ds[0]["image"].shape == (1, 28, 28)
    assert 0.0 <= float(ds[0]["image"].min()) and float(ds[0]["image"].max()) <= 1.0
    natural = torch.cat([photo_crops(159, 28, generator=torch.Generator().manual_seed(1)), ds[0]["image"][None]])
    # a small CNN trained from scratch is only weakly vulnerable to natural-image UAPs (Minagi et al. 2022): zeta 8 %
    fitter = SGDUAP(net, zeta=0.08, bounds=BOUNDS, target=0, max_passes=3, batch_size=16).set_random_state(0)
    res = fitter.fit(natural, reference=x)
    assert res.eps == pytest.approx(0.08 * float(lp_norm(x, 2).mean()), rel=1e-5)  # ζ relative to the medical images
    res_loader = SGDUAP(net, zeta=0.08, bounds=BOUNDS, target=0, max_passes=1).fit(DataLoader(ds, batch_size=3), reference=x)
    assert res_loader.eps == pytest.approx(res.eps)
    rate = _rate(net, res.delta, x, target=0)
    assert rate > max(_controls(net, res.delta, x, 2, target=0)) + 0.1


# ---------------------------------------------------------------------------------------------------- save, load, resume
@pytest.mark.parametrize("dims,view", [(2, ".png"), (3, ".nii.gz")])
def test_save_load_round_trip_and_apply_perturbation(tmp_path, dims, view):
    x, net = _data(dims), _net(dims)
    res = SGDUAP(net, zeta=0.05, bounds=BOUNDS, max_passes=2, target=1).set_random_state(0).fit(x)
    paths = res.save(tmp_path / "uap.pt")
    assert paths[0].is_file() and paths[1].name == "uap" + view and paths[1].is_file()
    back = UAPResult.load(paths[0])
    assert torch.equal(back.delta, res.delta) and back.eps == res.eps and back.zeta == res.zeta
    assert back.curve == res.curve and back.target == 1 and back.bounds == BOUNDS and back.method == "SGDUAP"
    if dims == 3:
        import nibabel as nib

        vol = np.asarray(nib.load(str(paths[1])).dataobj)
        np.testing.assert_allclose(vol, res.delta[0].numpy(), rtol=1e-6)
    from monai_robust.transforms.array import ApplyPerturbation

    assert torch.allclose(ApplyPerturbation(paths[0], bounds=BOUNDS)(x), res.apply(x))
    with pytest.raises(ValueError, match=r"\.pt"):
        res.save(tmp_path / "uap.npy")
    with pytest.raises(ValueError, match="does not exist"):
        UAPResult.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, kind):
    x, net = _data(2), _net(2)
    kw = {"zeta": 0.05, "bounds": BOUNDS, "batch_size": 4, "target_rate": 1.0}
    if kind == "sgd":
        kw["step_decay"] = 0.5
    full = _fitter(kind, net, max_passes=3, **kw).set_random_state(0).fit(x, checkpoint=tmp_path / "a.pt")
    _fitter(kind, net, max_passes=1, **kw).set_random_state(0).fit(x, checkpoint=tmp_path / "b.pt")
    assert len(UAPResult.load(tmp_path / "b.pt").curve) == 1  # a checkpoint also loads as a result
    resumed = _fitter(kind, net, max_passes=3, **kw).set_random_state(9).fit(x, checkpoint=tmp_path / "b.pt", resume=True)
    assert torch.allclose(resumed.delta, full.delta, atol=1e-6) and resumed.curve == pytest.approx(full.curve)
    assert resumed.seed == full.seed
    with pytest.raises(ValueError, match="cannot resume"):
        _fitter(kind, net, max_passes=3, **{**kw, "target": 1}).fit(x, checkpoint=tmp_path / "b.pt", resume=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        _fitter(kind, net, max_passes=3, **kw).fit(_data(2, size=10), checkpoint=tmp_path / "b.pt", resume=True)


def test_tensorboard_curve_and_progress_bar(capsys):
    x, net = _data(2), _net(2)
    calls = []

    class Writer:
        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

    res = SGDUAP(net, zeta=0.05, bounds=BOUNDS, max_passes=3, summary_writer=Writer(), tag="t", progress=True).fit(x)
    assert calls == [("t/fooling_rate", r, i + 1) for i, r in enumerate(res.curve)]
    assert "SGDUAP" in capsys.readouterr().err


def test_stops_at_target_rate():
    torch.manual_seed(0)
    x, net = _data(2), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)).eval()
    res = SGDUAP(net, eps=5.0, bounds=BOUNDS, max_passes=10, target=0, target_rate=0.5).fit(x)
    assert res.converged and res.rate >= 0.5 and len(res.curve) < 10


def test_single_logit_binary_head():
    x = _data(2)
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 1).eval()
    res = IterativeUAP(net, eps=3.0, bounds=BOUNDS, target=1, max_passes=2).fit(x)
    with torch.no_grad():
        assert res.rate == pytest.approx(float((net(res.apply(x))[:, 0] > 0).float().mean()))
    with pytest.raises(ValueError, match="out of range for a model with 2 classes"):
        SGDUAP(net, eps=1.0, target=2, max_passes=1).fit(x)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"zeta": 0.0}, "zeta"),
        ({"zeta": -0.04}, "zeta"),
        ({"zeta": math.nan}, "zeta"),
        ({}, "exactly one"),
        ({"eps": 0.1, "zeta": 0.04}, "exactly one"),
        ({"eps": 0.0}, "eps"),
        ({"zeta": 0.04, "lp": 1}, "lp"),
        ({"zeta": 0.04, "target": -1}, "target"),
        ({"zeta": 0.04, "max_passes": 0}, "max_passes"),
        ({"zeta": 0.04, "target_rate": 1.5}, "target_rate"),
        ({"zeta": 0.04, "batch_size": 0}, "batch_size"),
        ({"zeta": 0.04, "summary_writer": object()}, "summary_writer"),
        ({"zeta": 0.04, "inner": "pgd"}, "inner"),
        ({"zeta": 0.04, "inner": "deepfool", "target": 0}, "DeepFool"),
        ({"zeta": 0.04, "step_size": -1.0}, "step_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IterativeUAP(_net(2), **kwargs)


@pytest.mark.parametrize(
    "kwargs,match", [({"step_decay": 1.5}, "step_decay"), ({"beta": "x"}, "beta"), ({"loss": 3}, "loss")]
)
def test_bad_sgd_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGDUAP(_net(2), zeta=0.04, **kwargs)


def test_bad_sources_and_shapes():
    x, net = _data(2), _net(2)
    fitter = SGDUAP(net, zeta=0.04, bounds=BOUNDS, max_passes=1)
    for empty in ([], DataLoader(Dataset([]), batch_size=2), torch.zeros(0, 1, 12, 12)):
        with pytest.raises(ValueError, match="no images"):
            fitter.fit(empty)
    with pytest.raises(ValueError, match="reference yielded no images"):
        fitter.fit(x, reference=[])
    with pytest.raises(ValueError, match="outside bounds"):
        fitter.fit(x * 3)
    with pytest.raises(ValueError, match="NaN"):
        fitter.fit(torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="does not broadcast"):
        fitter.fit([x, _data(2, size=10)])
    with pytest.raises(ValueError, match="out of range for a model with 3 classes"):
        SGDUAP(net, zeta=0.04, target=3, max_passes=1).fit(x)
    with pytest.raises(ValueError, match="'image'"):
        fitter.fit([{"img": x}])
    with pytest.raises(ValueError, match="source must be"):
        fitter.fit("folder/")
    res = fitter.fit(x)
    with pytest.raises(ValueError, match=r"does not broadcast to images of shape \(12, 1, 10, 10\)"):
        evaluate_uap(net, res.delta, _data(2, size=10), bounds=BOUNDS)
    with pytest.raises(ValueError, match="does not broadcast"):
        res.apply(torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="target=7 is out of range"):
        evaluate_uap(net, res.delta, x, bounds=BOUNDS, target=7)
    with pytest.raises(ValueError, match="resume=True needs"):
        fitter.fit(x, resume=True)


# ---------------------------------------------------------------------------------------------------- stopping, mixed precision
class _Recorder(torch.nn.Module):
    """A linear 3-class model recording each call's batch size, whether it carried a gradient, and its dtype; under
    autocast (bf16) it claims class 0 for every input, which the fp32 model does not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(144, 3)
        self.calls: list[tuple[int, bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))
        self.calls.append((x.shape[0], x.requires_grad, z.dtype))
        return z if z.dtype == torch.float32 else z + torch.tensor([100.0, 0.0, 0.0], dtype=z.dtype)

    def minibatch_images(self, size: int) -> int:
        """Images through the model in calls of at most ``size`` images (the minibatch work, not the rate checks)."""
        return sum(n for n, _, _ in self.calls if n <= size)


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_stops_within_a_pass_on_the_exact_rate(kind):
    x, net = _data(2, n=64), _Recorder().eval()
    kw = {"eps": 5.0, "bounds": BOUNDS, "max_passes": 3, "target": 0, "target_rate": 0.5, "batch_size": 4}
    res = _fitter(kind, net, check_window=8, **kw).set_random_state(0).fit(x)
    assert res.converged and len(res.curve) == 1 and res.rate == pytest.approx(_rate(net, res.delta, x, target=0))
    within = net.minibatch_images(4)
    net.calls.clear()
    per_pass = _fitter(kind, net, check_window=None, **kw).set_random_state(0).fit(x)
    assert per_pass.converged and per_pass.rate == pytest.approx(_rate(net, per_pass.delta, x, target=0))
    whole = net.minibatch_images(4)
    assert whole >= 64 and within < whole  # without the running check a whole pass, with it a part of one


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_amp_steps_in_bf16_and_every_rate_in_fp32(monkeypatch, kind):
    from monai_robust.attacks import precision

    monkeypatch.delenv(precision.FP32_ENV, raising=False)
    x, net = _data(2, n=32), _Recorder().eval()
    kw = {"eps": 0.5, "bounds": BOUNDS, "max_passes": 2, "target": 0, "target_rate": 1.0, "batch_size": 4}
    res = _fitter(kind, net, amp=True, check_window=8, **kw).set_random_state(0).fit(x)
    steps = {dtype for n, grad, dtype in net.calls if grad}
    checks = {dtype for n, grad, dtype in net.calls if not grad and n > 4}
    assert steps == {torch.bfloat16} and checks == {torch.float32}
    # the bf16 steps see every image as class 0; the fit does not stop on that, and its curve is the fp32 rate
    assert not res.converged and len(res.curve) == 2 and res.rate == pytest.approx(_rate(net, res.delta, x, target=0))
    net.calls.clear()
    monkeypatch.setenv(precision.FP32_ENV, "1")
    _fitter(kind, net, amp=True, **kw).set_random_state(0).fit(x)
    assert {dtype for _, _, dtype in net.calls} == {torch.float32}


def test_bad_stopping_and_amp_arguments():
    with pytest.raises(ValueError, match="check_window"):
        SGDUAP(_net(2), zeta=0.04, check_window=0)
    with pytest.raises(ValueError, match="amp"):
        IterativeUAP(_net(2), zeta=0.04, amp="yes")


@pytest.mark.parametrize("kind", ["sgd", "fgsm"])
def test_channels_last_fit_matches_and_gives_the_network_back(kind):
    x, net = _data(2, n=16), _net(2)
    strides = [p.stride() for p in net.parameters()]
    kw = {"zeta": 0.05, "bounds": BOUNDS, "max_passes": 2, "batch_size": 4, "target_rate": 1.0}
    a = _fitter(kind, net, channels_last=True, **kw).set_random_state(0).fit(x)
    assert [p.stride() for p in net.parameters()] == strides
    b = _fitter(kind, net, channels_last=False, **kw).set_random_state(0).fit(x)
    assert torch.allclose(a.delta, b.delta, atol=1e-4) and a.curve == pytest.approx(b.curve)
    with pytest.raises(ValueError, match="channels_last"):
        SGDUAP(net, zeta=0.04, channels_last="yes")


def test_amp_default_follows_native_bf16(monkeypatch):
    from monai_robust.attacks import precision

    monkeypatch.delenv(precision.FP32_ENV, raising=False)
    x, net = _data(2, n=8), _Recorder().eval()
    kw = {"eps": 0.5, "bounds": BOUNDS, "max_passes": 1, "target": 0, "batch_size": 4}
    for flags, expected in ((("avx512_bf16",), torch.bfloat16), ((), torch.float32)):
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda f=flags: f)
        net.calls.clear()
        SGDUAP(net, **kw).set_random_state(0).fit(x)  # amp=None
        assert {dtype for _, grad, dtype in net.calls if grad} == {expected}
