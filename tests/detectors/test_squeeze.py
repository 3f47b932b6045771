# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import io
import itertools

import pytest
import torch

from monai_robust.attacks.pgd import PGD
from monai_robust.detectors.base import detection_auc
from monai_robust.detectors.squeeze import FeatureSqueezingDetector, bit_depth_reduction, median_smoothing
from tests.detectors.conftest import SMALL_LAYERS, balance_predictions
from tests.utils import SmallCNN


def _net(spatial_dims: int, clean: torch.Tensor) -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN(spatial_dims, in_channels=1, num_classes=2, width=8).eval()
    balance_predictions(net.fc, net, clean)
    return net


def _median_reference(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel-by-pixel upper median over the window [i - size // 2, i + (size - 1) // 2], borders replicated."""
    out = torch.empty_like(x)
    spatial = x.shape[2:]
    for pos in itertools.product(*(range(s) for s in spatial)):
        idx = [torch.arange(p - size // 2, p + (size - 1) // 2 + 1).clamp(0, s - 1) for p, s in zip(pos, spatial)]
        window = x[(slice(None), slice(None), *torch.meshgrid(*idx, indexing="ij"))].flatten(2)
        out[(slice(None), slice(None), *pos)] = window.sort(dim=-1).values[..., window.shape[-1] // 2]
    return out


# ---------------------------------------------------------------------------------------------- squeezers
@pytest.mark.parametrize("shape,size", [((2, 1, 5, 6), 2), ((2, 1, 5, 6), 3), ((1, 2, 4, 4, 5), 2), ((1, 1, 5, 5, 5), 3)])
def test_median_smoothing_matches_reference(shape, size):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(median_smoothing(x, size), _median_reference(x, size))


def test_bit_depth_reduction():
    x = torch.tensor([0.0, 0.3, 0.74, 1.0], requires_grad=True)
    out = bit_depth_reduction(x, bits=1)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    out.sum().backward()  # straight-through gradient
    torch.testing.assert_close(x.grad, torch.ones(4))
    torch.testing.assert_close(bit_depth_reduction(torch.tensor([-1.0, 0.2, 1.0]), 2, bounds=(-1, 1)),
                               torch.tensor([-1.0, 1 / 3, 1.0]))
    with pytest.raises(ValueError, match="within bounds"):
        bit_depth_reduction(torch.tensor([0.5, 1.2]), bits=4)
    for bad in (0, 17, 2.5, True):
        with pytest.raises(ValueError, match="bits"):
            bit_depth_reduction(torch.zeros(2), bits=bad)


# ---------------------------------------------------------------------------------------------- the detector
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kwargs", [{}, {"combine": "logistic"}, {"combine": "logistic", "layers": SMALL_LAYERS,
                                                                   "hidden_units": 8}])
def test_fit_score_round_trip(spatial_dims, kwargs, synthetic):
    data = synthetic(spatial_dims)
    net = _net(spatial_dims, data["clean"])
    squeezers = ("bits:3", "median:2", "median:3")
    det = FeatureSqueezingDetector(net, squeezers, **kwargs)
    assert det.fit(data["clean"], data["adv"]) is det and det.is_fitted
    with torch.no_grad():
        d = det.distances(data["clean"][:5])
        out = det(data["clean"][:5])
    assert d.shape == (5, 3) and bool(((d >= 0) & (d <= 2)).all())
    assert out.shape == (5,) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    if not kwargs:
        torch.testing.assert_close(out, d.amax(dim=1))  # the paper's joint detection
    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)
    buffer.seek(0)
    fresh = FeatureSqueezingDetector(net, squeezers, **kwargs)
    assert not fresh.is_fitted
    fresh.load_state_dict(torch.load(buffer))
    with torch.no_grad():
        torch.testing.assert_close(fresh(data["adv"][:5]), det(data["adv"][:5]))
    assert not any(k.startswith("network") or k.startswith("features.") for k in det.state_dict())
    # a state fitted with other squeezers is refused
    other = FeatureSqueezingDetector(net, ("bits:3",), **kwargs)
    other.load_state_dict(det.state_dict(), strict=False)
    with pytest.raises(ValueError, match="squeezers"):
        other(data["clean"][:2])


def test_callable_squeezer_and_mode(synthetic):
    data = synthetic(2)
    net = _net(2, data["clean"]).train()
    det = FeatureSqueezingDetector(net, (lambda x: x.flip(-1),)).fit(data["clean"], data["adv"])
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="shaped"):
        FeatureSqueezingDetector(net, (lambda x: x[..., 1:],)).fit(data["clean"], data["adv"])
    with pytest.raises(ValueError, match="within bounds"):
        FeatureSqueezingDetector(net, ("bits:4",)).fit(data["clean"] + 2, data["adv"])
    assert "squeezers" in repr(det)


BAD_ARGS = [
    {"squeezers": ()},
    {"squeezers": "bits:4"},
    {"squeezers": ("bits:4", "bits:4")},
    {"squeezers": ("bits:0",)},
    {"squeezers": ("bits:x",)},
    {"squeezers": ("median:1",)},
    {"squeezers": ("blur:3",)},
    {"squeezers": (3,)},
    {"combine": "mean"},
    {"bounds": (1.0, 0.0)},
    {"bounds": (0.0, float("inf"))},
    {"layers": ("fc",)},  # layers need combine="logistic"
    {"layers": ("nope",), "combine": "logistic"},
    {"hidden_units": -1},
    {"l2": -1.0},
]


@pytest.mark.parametrize("kwargs", BAD_ARGS)
def test_bad_args(kwargs):
    with pytest.raises(ValueError):
        FeatureSqueezingDetector(SmallCNN(2, 1, 2), **kwargs)


def test_bad_input(synthetic):
    data = synthetic(2)
    det = FeatureSqueezingDetector(_net(2, data["clean"]))
    with pytest.raises(RuntimeError, match="fit"):
        det(data["clean"])
    with pytest.raises(ValueError, match="single class"):
        det.fit(data["clean"], data["clean"][:0])
    with pytest.raises(ValueError):
        FeatureSqueezingDetector("not a network")
    with pytest.raises(ValueError, match="spatial"):
        median_smoothing(torch.zeros(2, 3), 2)


# ---------------------------------------------------------------------------------------------- real images
def test_separates_pgd_2_on_pneumonia(pneumonia, pneumonia_model):
    """Successful PGD adversarials at 2/255 move more under squeezing than clean images: AUC > 0.9 (observed 0.93 with
    the logistic combination; the joint max gives 0.88 on this small CNN, the 1 - max softmax baseline 0.93)."""
    x, y = pneumonia["test_images"], pneumonia["test_labels"]
    with torch.no_grad():
        keep = pneumonia_model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    attack = PGD(pneumonia_model, 2 / 255, num_steps=5, bounds=(0.0, 1.0))
    attack.set_random_state(0)
    adv = attack(x, y)
    with torch.no_grad():
        fooled = pneumonia_model(adv).argmax(1) != y
    assert int(fooled.sum()) >= 20, f"only {int(fooled.sum())} successful adversarial images"
    half = x.shape[0] // 2
    first = torch.arange(x.shape[0]) < half
    squeezers = ("bits:4", "median:2", "median:3")
    det = FeatureSqueezingDetector(pneumonia_model, squeezers, combine="logistic").fit(x[first], adv[first & fooled])
    with torch.no_grad():
        auc = detection_auc(det(x[~first]), det(adv[~first & fooled]))
    assert auc > 0.9, f"AUC {auc:.3f}"
    assert not pneumonia_model.training
