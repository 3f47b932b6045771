# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The Detector contract, run over every detector: separation of PGD images on PneumoniaMNIST, state_dict round trip
into a fresh detector, 2D/3D and MONAI DenseNet121, bad input; and the helpers of detectors/base.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.networks.nets import DenseNet121

from monai_robust.detectors.base import (
    Detector,
    FeatureHook,
    detection_auc,
    network_eval,
    pool_features,
    predicted_classes,
)
from monai_robust.detectors.kd_bu import KDBUDetector
from monai_robust.detectors.lid import LIDDetector
from tests.detectors.conftest import DETECTORS, PNEUMONIA_AUC, SMALL_LAYERS, balance_predictions, scores
from tests.utils import SmallCNN


def _small_net(spatial_dims: int, clean: torch.Tensor, width: int = 8) -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN(spatial_dims, in_channels=1, num_classes=2, width=width).eval()
    balance_predictions(net.fc, net, clean)
    return net


# ---------------------------------------------------------------------------------------------- detection on real data
@pytest.mark.parametrize("name", sorted(PNEUMONIA_AUC))
def test_separates_pgd_on_pneumonia(name, pneumonia_model, pneumonia_pgd):
    factory, min_auc = PNEUMONIA_AUC[name]
    clean, adv = pneumonia_pgd["clean"], pneumonia_pgd["adv"]
    det = factory(pneumonia_model).fit(clean[:100], adv[:100])
    auc = detection_auc(scores(det, clean[100:]), scores(det, adv[100:]))
    assert auc > min_auc, f"{name}: AUC {auc:.3f} <= {min_auc}"
    assert not pneumonia_model.training  # the network's mode is left as it was


# ---------------------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_fit_score_round_trip(name, spatial_dims, synthetic):
    data = synthetic(spatial_dims)
    net = _small_net(spatial_dims, data["clean"])
    det = DETECTORS[name](net, SMALL_LAYERS, "pool")
    assert det.fit(data["clean"], data["adv"]) is det and det.is_fitted
    out = scores(det, data["clean"][:5])
    assert out.shape == (5,) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    # a freshly built detector loads the fitted state (through bytes, as a checkpoint would) and scores the same
    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)
    buffer.seek(0)
    fresh = DETECTORS[name](net, SMALL_LAYERS, "pool")
    assert not fresh.is_fitted
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.is_fitted
    torch.testing.assert_close(scores(fresh, data["adv"][:5]), scores(det, data["adv"][:5]))
    # the state holds statistics only, never the network's weights
    assert not any(k.startswith("network") or k.startswith("features.") for k in det.state_dict())


@pytest.fixture(scope="module")
def densenet121() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """MONAI's DenseNet121 (2D, dropout 0.2) on 12 tiny 32 x 32 images, predicting both classes."""
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, dropout_prob=0.2).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(12, 1, 32, 32, generator=g)
    adv = (clean + 0.1 * torch.randn(clean.shape, generator=g).sign()).clamp(0, 1)
    balance_predictions(net.class_layers.out, net, clean)
    return net, clean, adv


DENSENET_DETECTORS = {  # the contract table with settings for 12 images of a large network
    "kd_bu": lambda net, layers, last: KDBUDetector(net, (last,), num_samples=2),
    "lid": lambda net, layers, last: LIDDetector(net, layers, k=3, batch_size=6),
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_monai_densenet121_2d(name, densenet121):
    net, clean, adv = densenet121
    layers = ("features.denseblock1", "features.transition2", "class_layers.out")
    det = DENSENET_DETECTORS.get(name, DETECTORS[name])(net, layers, "class_layers.flatten").fit(clean, adv)
    out = scores(det, adv[:3])
    assert out.shape == (3,) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("as_type", [np.asarray, torch.as_tensor, MetaTensor])
def test_input_types(as_type, synthetic):
    data = synthetic(2)
    net = _small_net(2, data["clean"])
    det = DETECTORS["deep_features"](net, SMALL_LAYERS, "pool").fit(data["clean"], data["adv"])
    expected = scores(det, data["clean"][:4])
    torch.testing.assert_close(scores(det, as_type(data["clean"][:4].numpy())), expected)


def test_fit_accepts_batches(synthetic):
    data = synthetic(2)
    net = _small_net(2, data["clean"])
    whole = DETECTORS["mahalanobis"](net, SMALL_LAYERS, "pool").fit(data["clean"], data["adv"])
    loader = DataLoader([{"image": im} for im in data["clean"]], batch_size=5)
    batched = DETECTORS["mahalanobis"](net, SMALL_LAYERS, "pool").fit(loader, list(data["adv"].split(7)))
    torch.testing.assert_close(scores(batched, data["adv"]), scores(whole, data["adv"]), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_forward_before_fit(name, synthetic):
    data = synthetic(2)
    det = DETECTORS[name](_small_net(2, data["clean"]), SMALL_LAYERS, "pool")
    with pytest.raises(RuntimeError, match="fit"):
        det(data["clean"])


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("which", ["clean", "adv"])
def test_single_class_present(name, which, synthetic):
    data = synthetic(2)
    det = DETECTORS[name](_small_net(2, data["clean"]), SMALL_LAYERS, "pool")
    data[which] = data[which][:0]
    with pytest.raises(ValueError, match="single class"):
        det.fit(data["clean"], data["adv"])
    assert not det.is_fitted


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_unknown_layer(name, synthetic):
    net = _small_net(2, synthetic(2)["clean"])
    with pytest.raises(ValueError, match=r"'features\.9'.*close matches.*features\.1") as err:
        DETECTORS[name](net, ("features.9", "fc"), "features.9")
    assert "candidates" in str(err.value)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_feature_shapes_differ(name, synthetic):
    data = synthetic(2)
    det = DETECTORS[name](_small_net(2, data["clean"], width=8), SMALL_LAYERS, "pool").fit(data["clean"], data["adv"])
    other = DETECTORS[name](_small_net(2, data["clean"], width=4), SMALL_LAYERS, "pool")
    other.load_state_dict(det.state_dict())  # statistics of a wider network
    with pytest.raises(ValueError, match="feature shapes differ between fit and use"):
        scores(other, data["clean"][:4])


def test_feature_shapes_differ_flatten(synthetic):
    data = synthetic(2)
    from monai_robust.detectors.deep_features import DeepFeatureDetector

    det = DeepFeatureDetector(_small_net(2, data["clean"]), ("features.4",), pooling="flatten")
    det.fit(data["clean"], data["adv"])
    with pytest.raises(ValueError, match=r"'features\.4': 256 at fit, 576 now"):
        det(torch.rand(2, 1, 12, 12))


@pytest.mark.parametrize("bad", [None, torch.rand(4, 8), "images"])
def test_bad_images(bad, synthetic):
    data = synthetic(2)
    det = DETECTORS["deep_features"](_small_net(2, data["clean"]), SMALL_LAYERS, "pool")
    with pytest.raises(ValueError):
        det.fit(bad, data["adv"])


# ---------------------------------------------------------------------------------------------- helpers
def test_feature_hook_reads_layers_and_leaves_no_hook():
    net = SmallCNN(3, 1, 2, width=4).eval()
    hook = FeatureHook(net, ("features.4", "fc"))
    logits, feats = hook(torch.rand(2, 1, 8, 8, 8))
    assert logits.shape == (2, 2) and feats["fc"] is not None and torch.equal(feats["fc"], logits)
    assert feats["features.4"].shape == (2, 8, 4, 4, 4)
    assert all(not m._forward_hooks for m in net.modules())


def test_feature_hook_bad_layers():
    net = SmallCNN(2, 1, 2)
    for bad in ((), "fc", ("fc", "fc"), (3,)):
        with pytest.raises(ValueError, match="layers"):
            FeatureHook(net, bad)
    with pytest.raises(ValueError, match="network"):
        FeatureHook("net", ("fc",))


def test_feature_hook_layer_not_called():
    net = SmallCNN(2, 1, 2)
    net.unused = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="unused"):
        FeatureHook(net, ("unused",))(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize(
    "shape, pooling, expected",
    [((3, 4, 5, 5), "avg", (3, 4)), ((3, 4, 5, 5, 5), "avg", (3, 4)), ((3, 4, 5, 5), "flatten", (3, 100)), ((3, 7), "avg", (3, 7))],
)
def test_pool_features(shape, pooling, expected):
    assert pool_features(torch.rand(shape), pooling).shape == expected


def test_pool_features_bad():
    with pytest.raises(ValueError):
        pool_features(torch.rand(3, 4, 5), "max")
    with pytest.raises(ValueError):
        pool_features(torch.rand(3), "avg")


def test_predicted_classes_and_network_eval():
    assert predicted_classes(torch.tensor([[0.2], [-0.1]])).tolist() == [1, 0]
    assert predicted_classes(torch.tensor([[0.2, 0.1, 0.9]])).tolist() == [2]
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2)).train()
    net[1].eval()
    with network_eval(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training


def test_detection_auc():
    assert detection_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.15])) == pytest.approx(0.75)
    assert detection_auc([0.0, 1.0], [2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        detection_auc(torch.tensor([]), torch.tensor([1.0]))


def test_base_needs_subclass():
    det = Detector(SmallCNN(2, 1, 2), ("fc",))
    with pytest.raises(NotImplementedError):
        det.fit(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
