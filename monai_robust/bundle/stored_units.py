# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The threat model in the image's stored units: a bundle's ``preprocessing`` split into the loading/geometry part
(read, channel first, resize, crop: applied once, never differentiated) and the intensity part (``ScaleIntensity``,
``ScaleIntensityRange``, ``NormalizeIntensity`` with per-image statistics, casts, ...), which becomes the first
layer of :class:`StoredUnitsModel` = *intensity part ∘ network*. Attacks on that model, with the stored value range
as bounds, perturb the values the file holds (8-bit RGB, HU, raw counts).

Every intensity step is one of three kinds, stated in :attr:`IntensityStep.mode`:

- ``"reimplemented"``: MONAI's transform does not pass gradients through torch (``NormalizeIntensity`` writes in
  place into a view and takes its statistics as Python floats); a differentiable re-implementation is used, tested to
  match MONAI's output to 1e-5.
- ``"monai"``: MONAI's own array transform, whose gradient through torch agrees with finite differences (tested).
- ``"straight_through"``: anything else; forward runs MONAI's transform, backward passes the gradient unchanged
  (BPDA with the identity, Athalye et al. 2018). A warning names the transform: gradients of this step are an
  approximation, so robust accuracy is an upper bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import (
    CastToType,
    Compose,
    EnsureType,
    MapTransform,
    NormalizeIntensity,
    Randomizable,
    ScaleIntensity,
    ScaleIntensityRange,
    ToTensor,
    Transform,
)
from torch import nn

__all__ = [
    "IntensityStep",
    "NormalizeIntensityOp",
    "PreprocessingSplit",
    "StoredUnitsModel",
    "gradient_error",
    "split_preprocessing",
]

_AS_IS = (ScaleIntensity, ScaleIntensityRange, CastToType, EnsureType, ToTensor)
"""MONAI array transforms whose torch gradient is exact (finite-difference tests in tests/bundle)."""


def _plain(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).as_subclass(torch.Tensor)


class NormalizeIntensityOp(nn.Module):
    """Differentiable ``NormalizeIntensity``: ``(x - mean) / std`` per image (or per channel), optionally over the
    non-zero voxels only, with MONAI's conventions (population std, a zero std replaced by 1, fixed ``subtrahend`` /
    ``divisor`` when given). Statistics stay in the autograd graph, so an attack sees how a perturbation moves them.

    Args:
        subtrahend: fixed value(s) to subtract (one per channel when ``channel_wise``); ``None``: the image mean.
        divisor: fixed divisor(s); ``None``: the image std.
        nonzero: normalise only non-zero voxels (zeros stay 0).
        channel_wise: statistics per channel.

    Example::

        >>> op = NormalizeIntensityOp.from_monai(NormalizeIntensity(nonzero=True, channel_wise=True))
        >>> op(torch.rand(2, 3, 8, 8) * 255).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        subtrahend: Sequence[float] | float | None = None,
        divisor: Sequence[float] | float | None = None,
        nonzero: bool = False,
        channel_wise: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("subtrahend", subtrahend), ("divisor", divisor)):
            if v is not None and torch.as_tensor(v).ndim > 1:
                raise ValueError(f"{name} must be a number or one number per channel, got {name}={v!r}.")
        self.subtrahend, self.divisor = subtrahend, divisor
        self.nonzero, self.channel_wise = bool(nonzero), bool(channel_wise)

    @classmethod
    def from_monai(cls, t: NormalizeIntensity) -> NormalizeIntensityOp:
        """The re-implementation of a configured MONAI ``NormalizeIntensity``."""
        return cls(t.subtrahend, t.divisor, t.nonzero, t.channel_wise)

    def _one(self, img: torch.Tensor, sub: Any, div: Any) -> torch.Tensor:
        mask = img != 0 if self.nonzero else torch.ones_like(img, dtype=torch.bool)
        if not bool(mask.any()):
            return img
        values = img[mask]
        mean = values.mean() if sub is None else torch.as_tensor(sub, dtype=img.dtype, device=img.device)
        std = values.std(unbiased=False) if div is None else torch.as_tensor(div, dtype=img.dtype, device=img.device)
        std = torch.where(std == 0, torch.ones_like(std), std)
        return torch.where(mask, (img - mean) / std, img)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: in shape (batch, channels, spatial_1[, spatial_2, ...]); returns a float tensor of the same shape."""
        x = x if x.is_floating_point() else x.float()
        out = []
        for img in x:
            if self.channel_wise:
                n = len(img)
                for name, v in (("subtrahend", self.subtrahend), ("divisor", self.divisor)):
                    if v is not None and len(torch.as_tensor(v).reshape(-1)) != n:
                        raise ValueError(f"the image has {n} channels but {name}={v!r} has another length.")
                sub = [None] * n if self.subtrahend is None else list(torch.as_tensor(self.subtrahend).reshape(-1))
                div = [None] * n if self.divisor is None else list(torch.as_tensor(self.divisor).reshape(-1))
                out.append(torch.stack([self._one(c, s, d) for c, s, d in zip(img, sub, div)]))
            else:
                out.append(self._one(img, self.subtrahend, self.divisor))
        return torch.stack(out)


class _MonaiStep(nn.Module):
    """A MONAI array transform applied per image of a batch, differentiated as it is or straight through."""

    def __init__(self, transform: Callable, straight_through: bool) -> None:
        super().__init__()
        self.transform, self.straight_through = transform, straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.straight_through:
            y = torch.stack([_plain(self.transform(img.detach().clone())) for img in x]).to(x.device)
            if y.shape != x.shape:
                raise ValueError(
                    f"{type(self.transform).__name__} changes the shape {tuple(x.shape[1:])} -> {tuple(y.shape[1:])}: "
                    "it cannot be differentiated straight through; move it before the intensity transforms."
                )
            return x + (y.to(x.dtype) - x.detach())
        return torch.stack([_plain(self.transform(img)) for img in x]).to(x.dtype)


@dataclass
class IntensityStep:
    """One step of the intensity part.

    Attributes:
        name: the MONAI transform's class name.
        mode: ``"reimplemented"``, ``"monai"`` or ``"straight_through"`` (see the module docstring).
        module: the differentiable ``nn.Module`` on batches ``(N, C, *spatial)``.
        transform: MONAI's array transform, the reference.
    """

    name: str
    mode: str
    module: nn.Module
    transform: Any


@dataclass
class PreprocessingSplit:
    """A bundle's preprocessing split at its first intensity transform.

    Attributes:
        loading: the loading/geometry transforms (MONAI ``Compose`` on data dicts or on paths), applied once.
        steps: the intensity part, in order.
        image_key: the image key of dictionary transforms (``None`` for array transforms).
    """

    loading: Compose
    steps: list[IntensityStep]
    image_key: str | None

    @property
    def approximations(self) -> list[str]:
        """Names of the steps differentiated straight through (empty when every gradient is exact)."""
        return [s.name for s in self.steps if s.mode == "straight_through"]

    def describe(self) -> list[dict[str, str]]:
        """``[{"transform": name, "gradient": mode}]`` for reports."""
        return [{"transform": s.name, "gradient": s.mode} for s in self.steps]


def _flatten(transforms: Any) -> list[Any]:
    if isinstance(transforms, Compose):
        return [t for sub in transforms.transforms for t in _flatten(sub)]
    if isinstance(transforms, (list, tuple)):
        return [t for sub in transforms for t in _flatten(sub)]
    return [transforms]


def _array_transform(t: Any) -> Any:
    """The array transform a dictionary transform wraps (``ScaleIntensityd.scaler``, ...), else ``t`` itself."""
    if not isinstance(t, MapTransform):
        return t
    inner = [v for v in vars(t).values() if isinstance(v, Transform) and not isinstance(v, MapTransform)]
    return inner[0] if len(inner) == 1 else t


def _is_intensity(t: Any) -> bool:
    inner = _array_transform(t)
    return type(inner).__module__.startswith("monai.transforms.intensity") or isinstance(inner, _AS_IS[:2])


def _touches(t: Any, key: str | None) -> bool:
    return key is None or not isinstance(t, MapTransform) or key in t.keys


def _step(t: Any) -> IntensityStep:
    inner = _array_transform(t)
    name = type(t).__name__
    if isinstance(t, Randomizable) or isinstance(inner, Randomizable):
        raise ValueError(
            f"{name} in the inference preprocessing is random: the model under attack must be deterministic; "
            "point --preprocessing at a config id without random transforms."
        )
    if isinstance(inner, NormalizeIntensity):
        return IntensityStep(name, "reimplemented", NormalizeIntensityOp.from_monai(inner), inner)
    if isinstance(inner, _AS_IS):
        return IntensityStep(name, "monai", _MonaiStep(inner, straight_through=False), inner)
    warnings.warn(
        f"{name} has no exact gradient through torch here: it is differentiated straight through (BPDA with the "
        "identity); robust accuracy under gradient attacks is then an upper bound.",
        stacklevel=3,
    )
    return IntensityStep(name, "straight_through", _MonaiStep(inner, straight_through=True), inner)


def split_preprocessing(preprocessing: Any, image_key: str | None = "image") -> PreprocessingSplit:
    """Splits a bundle's ``preprocessing`` at its first intensity transform.

    Transforms before it (``LoadImage(d)``, ``EnsureChannelFirst(d)``, ``Resize(d)``, crops, orientation, casts)
    form the loading part; it and every later transform that acts on the image form the intensity part. Dictionary
    transforms that do not act on ``image_key`` (labels) join the loading part, with ``allow_missing_keys`` set so
    that unlabelled inputs pass.

    Args:
        preprocessing: a MONAI ``Compose`` (nested ones are flattened) or a list of transforms.
        image_key: the image key of dictionary transforms; ``None`` for array transforms.

    Returns:
        The :class:`PreprocessingSplit`.

    Raises:
        ValueError: When a transform of the intensity part is random.

    Example::

        >>> split = split_preprocessing(parser.get_parsed_content("preprocessing"))
        >>> [s.name for s in split.steps]
        ['CastToTyped', 'NormalizeIntensityd', 'EnsureTyped']
    """
    loading, steps, started = [], [], False
    for t in _flatten(preprocessing):
        if isinstance(t, MapTransform) and not _touches(t, image_key):
            t.allow_missing_keys = True  # label transforms: inputs to predict have no label
        started = started or (_touches(t, image_key) and _is_intensity(t))
        if not started or not _touches(t, image_key):
            loading.append(t)
        else:
            steps.append(_step(t))
    return PreprocessingSplit(Compose(loading), steps, image_key)


class StoredUnitsModel(nn.Module):
    """*intensity part ∘ network*: a classifier that takes images in their stored units (after loading and geometry).

    Args:
        network: the bundle's network (logits).
        steps: the intensity part (:attr:`PreprocessingSplit.steps`).
        bounds: ``(low, high)`` of stored values, the box the attacks respect (e.g. ``(0, 255)`` for 8-bit).

    Example::

        >>> model = StoredUnitsModel(net, split.steps, bounds=(0.0, 255.0))
        >>> adv = PGD(model, eps=2.0, bounds=model.bounds)(x_stored, y)  # 2 grey levels of 255
    """

    def __init__(self, network: nn.Module, steps: Iterable[IntensityStep], bounds: tuple[float, float] | None) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        self.network = network
        steps = list(steps)
        self.step_names = [s.name for s in steps]
        self.intensity = nn.Sequential(*[s.module for s in steps])
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))

    def to_model_units(self, x: torch.Tensor) -> torch.Tensor:
        """The intensity part alone: stored units -> the network's input."""
        return self.intensity(_plain(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: stored values in shape (batch, channels, spatial_1[, spatial_2, ...]); returns the network's logits."""
        return self.network(self.to_model_units(x))


def gradient_error(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, h: float = 0.05, seed: int = 0) -> float:
    """Relative gap between ``fn``'s autograd directional derivative and a central finite difference at ``x``
    (float64), along a random direction: about 0 where autograd sees the whole function, large where a statistic or
    a step is cut from the graph.

    Args:
        fn: tensor -> tensor.
        x: the point (any shape; evaluated in float64).
        h: finite-difference step, in the units of ``x``.
        seed: seed of the direction and of the output weights.

    Returns:
        ``|autograd - finite difference| / max(|finite difference|, 1e-12)``.

    Example::

        >>> gradient_error(NormalizeIntensityOp(nonzero=True), torch.rand(1, 1, 8, 8) * 255) < 1e-4
        True
    """
    g = torch.Generator().manual_seed(seed)
    x = _plain(x).double().detach()
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    y0 = fn(x)
    w = torch.randn(y0.shape, generator=g, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    out = (_plain(fn(xg)).double() * w).sum()
    (grad,) = torch.autograd.grad(out, xg, allow_unused=True)
    auto = 0.0 if grad is None else float((grad * v).sum())
    fd = float(((_plain(fn(x + h * v)).double() - _plain(fn(x - h * v)).double()) * w).sum() / (2 * h))
    return abs(auto - fd) / max(abs(fd), 1e-12)
