# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The ``Detector`` base class, the ``FeatureHook`` that reads a network's layers, and the helpers detectors share.

A detector is an ``nn.Module`` (DESIGN.md, "Detectors are nn.Modules"; style-anchors §6.5):

* ``Detector(network, layers=(...))`` reads the outputs of the named sub-modules of ``network`` through forward
  hooks that exist only while the detector runs the network;
* :meth:`Detector.fit` takes clean and adversarial images (tensors, or iterables of batches) and stores what it
  learns as registered **buffers**, so ``state_dict``, MONAI/Ignite checkpoints and bundles carry a fitted detector;
* :meth:`Detector.forward` returns one score per sample, ``(N,)``; higher means more likely adversarial. Choosing a
  threshold is a separate step (:class:`~monai_robust.detectors.guard.DetectorGuard`, or an ROC AUC metric).

The network is held by reference and is **not** a registered sub-module: a detector's ``state_dict`` holds only its
fitted statistics (a checkpoint does not duplicate the classifier), and ``detector.to(device)`` moves only those
statistics; keep the detector on the network's device. Detectors run the network in eval mode and restore every
module's mode afterwards. Their forward is differentiable when gradients are enabled (for adaptive attacks, see
:class:`~monai_robust.detectors.adaptive.DetectorAwarePGD`); wrap inference in ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from monai.utils import look_up_option
from monai.utils.enums import StrEnum
from torch import nn

from monai_robust.data.batches import as_batches, as_image_batch

__all__ = [
    "Detector",
    "FeatureHook",
    "FittedModule",
    "Pooling",
    "detection_auc",
    "network_eval",
    "pool_features",
    "predicted_classes",
]


class Pooling(StrEnum):
    """How a layer output ``(N, C, *spatial)`` becomes a feature vector: ``"avg"`` (the mean of each channel over
    space, ``(N, C)``, as Lee et al. 2018 do) or ``"flatten"`` (every activation, ``(N, C * prod(spatial))``, as Ma et
    al. 2018 do for LID)."""

    AVG = "avg"
    FLATTEN = "flatten"


def pool_features(x: torch.Tensor, pooling: str = Pooling.AVG) -> torch.Tensor:
    """One feature vector per sample from a layer output.

    Args:
        x: layer output ``(N, C, *spatial)`` (any spatial rank) or ``(N, F)``.
        pooling: ``"avg"`` (channel means) or ``"flatten"``; ignored for ``(N, F)`` inputs.

    Returns:
        ``(N, F)`` features.

    Raises:
        ValueError: When ``x`` has fewer than 2 dimensions or ``pooling`` is unknown.

    Example::

        >>> pool_features(torch.ones(4, 8, 5, 5, 5)).shape
        torch.Size([4, 8])
    """
    mode = look_up_option(pooling, Pooling)
    if x.ndim < 2:
        raise ValueError(f"a layer output must be (N, F) or (N, C, *spatial), got shape {tuple(x.shape)}.")
    if x.ndim == 2:
        return x
    if mode == Pooling.AVG:
        return x.mean(dim=tuple(range(2, x.ndim)))  # (N, C, *spatial) -> (N, C)
    return x.flatten(1)  # (N, C * prod(spatial))


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class indices ``(N,)`` from logits ``(N, classes)``; a single-logit (binary) head predicts 1 where ``f > 0``.

    Example::

        >>> predicted_classes(torch.tensor([[0.3], [-1.0]]))
        tensor([1, 0])
    """
    if logits.ndim != 2:
        raise ValueError(f"the network must return logits (N, classes), got shape {tuple(logits.shape)}.")
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``(N, classes)``; a single-logit head ``f`` gives ``[1 - sigmoid(f), sigmoid(f)]``."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


@contextlib.contextmanager
def network_eval(network: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for every module of ``network``, restored afterwards (also on error); gradients are left as they are.

    Unlike MONAI's ``eval_mode`` this does not disable gradients, so a detector stays differentiable inside an attack.

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Dropout(0.5)).train()
        >>> with network_eval(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    modes = [(m, m.training) for m in network.modules()]
    try:
        network.eval()
        yield network
    finally:
        for m, training in modes:
            m.training = training


class FeatureHook:
    """Runs a network and returns the outputs of some of its named sub-modules, read through forward hooks.

    The hooks exist only during :meth:`__call__` (nothing is left on the network; it can be pickled, copied and
    attacked as usual). A module called more than once in one forward pass reports its last output.

    Args:
        network: any ``nn.Module``.
        layers: names from ``dict(network.named_modules())``, e.g. ``("features.denseblock4", "class_layers.flatten")``
            for MONAI's ``DenseNet121``.

    Raises:
        ValueError: When ``layers`` is empty, holds duplicates or non-strings, or names a module the network does not
            have (the message lists close matches and, for small networks, every candidate).

    Example::

        >>> hook = FeatureHook(net, layers=("features.2", "pool"))
        >>> logits, feats = hook(images)  # feats["pool"]: that module's output
    """

    def __init__(self, network: nn.Module, layers: Sequence[str]) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise ValueError(f"layers must be a non-empty sequence of module names, got layers={layers!r}.")
        if not all(isinstance(name, str) for name in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct module names (str), got layers={layers!r}.")
        modules = {name: m for name, m in network.named_modules() if name}
        missing = [name for name in layers if name not in modules]
        if missing:
            names = list(modules)
            close = sorted({c for name in missing for c in difflib.get_close_matches(name, names, n=5, cutoff=0.5)})
            listing = f"candidates: {names}" if len(names) <= 60 else f"{len(names)} candidates in network.named_modules()"
            raise ValueError(
                f"layer(s) {missing} not found in {type(network).__name__}; close matches: {close}; {listing}."
            )
        self.network = network
        self.layers = tuple(layers)
        self._modules = [modules[name] for name in self.layers]

    @staticmethod
    def _store(outputs: dict[str, torch.Tensor], name: str, module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer '{name}' returned {type(out).__name__}, not a tensor; pick a module returning one.")
        outputs[name] = out

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Runs ``network(x)``.

        Args:
            x: input batch ``(N, C, *spatial)``.

        Returns:
            ``(network output, {layer name: that layer's output})``.

        Raises:
            RuntimeError: When a requested layer is not called during the forward pass.
        """
        outputs: dict[str, torch.Tensor] = {}
        handles = [m.register_forward_hook(partial(self._store, outputs, n)) for n, m in zip(self.layers, self._modules)]
        try:
            out = self.network(x)
        finally:
            for h in handles:
                h.remove()
        unused = [name for name in self.layers if name not in outputs]
        if unused:
            raise RuntimeError(f"layer(s) {unused} were not called in {type(self.network).__name__}.forward.")
        return out, outputs


def detection_auc(clean_scores: Any, adversarial_scores: Any) -> float:
    """ROC AUC of detector scores, adversarial = positive, via MONAI's :func:`~monai.metrics.compute_roc_auc`.

    Args:
        clean_scores: ``(n,)`` scores of clean images.
        adversarial_scores: ``(m,)`` scores of adversarial images.

    Returns:
        The AUC in [0, 1] (0.5 = chance).

    Raises:
        ValueError: When either set is empty.

    Example::

        >>> detection_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.15]))
        0.75
    """
    c = torch.as_tensor(clean_scores).detach().float().reshape(-1).cpu()
    a = torch.as_tensor(adversarial_scores).detach().float().reshape(-1).cpu()
    if c.numel() == 0 or a.numel() == 0:
        raise ValueError(f"detection_auc needs clean and adversarial scores, got {c.numel()} and {a.numel()}.")
    y = torch.cat([torch.zeros_like(c), torch.ones_like(a)])
    return float(compute_roc_auc(torch.cat([c, a]), y))


class FittedModule(nn.Module):
    """An ``nn.Module`` whose fitted statistics are buffers of sizes known only after ``fit``.

    Buffers are registered empty and replaced when fitted; :meth:`load_state_dict` resizes them to the incoming
    tensors, so a freshly built module loads a fitted ``state_dict``. The ``fitted`` buffer records the state.

    Example::

        >>> fresh = LogisticRegression()  # a FittedModule
        >>> fresh.load_state_dict(fitted_regression.state_dict())  # buffers take the fitted sizes
        >>> fresh.is_fitted
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or a fitted state was loaded)."""
        return bool(self.fitted)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"call fit() before using {type(self).__name__} (or load a fitted state_dict).")


class Detector(FittedModule):
    """Base of the adversarial-input detectors: fitted on clean and adversarial images, one score per image.

    Subclasses implement :meth:`_fit` (on lists of image batches) and :meth:`score` (on one checked batch), and use
    :meth:`extract` to read pooled layer features. The base handles input reading, the fitted flag, the network's
    mode, and the check that feature sizes at use match those seen in ``fit``.

    Args:
        network: the classifier ``(N, C, *spatial) -> (N, classes)`` (2D or 3D), held by reference (not registered).
        layers: names of the modules whose outputs the detector reads (see :class:`FeatureHook`).
        pooling: how a layer output becomes a feature vector, ``"avg"`` or ``"flatten"`` (:class:`Pooling`).

    Raises:
        ValueError: When ``network`` is not a module, a layer does not exist, or ``pooling`` is unknown.

    Example::

        >>> det = MahalanobisDetector(net, layers=("features.denseblock2", "features.denseblock3"))
        >>> det.fit(clean_loader, adversarial_loader)          # statistics become buffers
        >>> torch.save(det.state_dict(), "detector.pt")         # ... later, beside the same network:
        >>> det2 = MahalanobisDetector(net, layers=("features.denseblock2", "features.denseblock3"))
        >>> det2.load_state_dict(torch.load("detector.pt"))
        >>> with torch.no_grad():
        ...     scores = det2(images)                           # (N,), higher = more likely adversarial

    See also:
        :class:`~monai_robust.detectors.guard.DetectorGuard`, :func:`detection_auc`.
    """

    def __init__(self, network: nn.Module, layers: Sequence[str], *, pooling: str = Pooling.AVG) -> None:
        super().__init__()
        hook = FeatureHook(network, layers)
        self.pooling = look_up_option(pooling, Pooling)
        # held by reference, deliberately not a sub-module: the state_dict holds only the fitted statistics
        self.__dict__["network"] = network
        self._hook = hook
        self.layers = hook.layers
        self.register_buffer("feature_dims", torch.zeros(len(self.layers), dtype=torch.long))

    # ------------------------------------------------------------------ public API
    def fit(self, clean: Any, adversarial: Any) -> Detector:
        """Learns the detector's statistics from clean images (label 0) and adversarial images (label 1).

        Args:
            clean: clean images ``(N, C, *spatial)``, or an iterable of batches (tensors, ``(images, ...)`` tuples or
                MONAI dictionaries with an ``"image"`` key), e.g. a ``DataLoader``. Held in memory during ``fit``.
            adversarial: adversarial images, in the same forms.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: When either set is empty (a single class present), or a batch is not an image batch.
        """
        clean_b, adv_b = as_batches(clean, "clean"), as_batches(adversarial, "adversarial")
        n_clean, n_adv = sum(b.shape[0] for b in clean_b), sum(b.shape[0] for b in adv_b)
        if n_clean == 0 or n_adv == 0:
            raise ValueError(
                f"fit needs both clean and adversarial images (two classes), got {n_clean} clean and {n_adv} "
                "adversarial: a single class is present."
            )
        self.fitted.fill_(False)
        try:
            with network_eval(self.network):
                self._fit(clean_b, adv_b)
        except BaseException:
            self.fitted.fill_(False)  # never leave a half-fitted detector marked as fitted
            raise
        self.fitted.fill_(True)
        return self

    def forward(self, img: Any) -> torch.Tensor:
        """Scores images.

        Args:
            img: ``(N, C, *spatial)`` tensor, array or MetaTensor, preprocessed as for the network.

        Returns:
            ``(N,)`` float scores; higher means more likely adversarial.

        Raises:
            RuntimeError: When the detector is not fitted.
            ValueError: When ``img`` is not an image batch, or a layer's feature size differs from the one seen in
                ``fit``.
        """
        self._check_fitted()
        x = as_image_batch(img, "img", finite=True).to(self.device)
        with network_eval(self.network):
            return self.score(x)

    def extract(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs the network on ``x`` and returns its logits and the pooled ``(N, F_l)`` features of each layer,
        checked against the sizes seen in ``fit`` once fitted (or recorded while fitting)."""
        logits, outputs = self._hook(x)
        feats = [pool_features(outputs[name], self.pooling) for name in self.layers]
        dims = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
        if self.is_fitted:
            fitted = self.feature_dims.cpu()
            if not torch.equal(dims, fitted):
                bad = [
                    f"'{n}': {int(a)} at fit, {int(b)} now" for n, a, b in zip(self.layers, fitted, dims) if a != b
                ]
                raise ValueError(f"feature shapes differ between fit and use ({'; '.join(bad)}).")
        else:
            self.feature_dims = dims.to(self.feature_dims.device)
        return logits, feats

    def extract_all(self, batches: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`extract` over a list of batches without gradients, concatenated: ``(N, classes)``, ``[(N, F_l)]``."""
        logits, feats = [], []
        with torch.no_grad():
            for b in batches:
                lg, fs = self.extract(b.to(self.device))
                logits.append(lg.float())
                feats.append([f.float() for f in fs])
        return torch.cat(logits), [torch.cat(layer) for layer in zip(*feats)]

    @property
    def device(self) -> torch.device:
        """Where the network runs (its first parameter's device; the buffers' device for a parameter-free network)."""
        param = next(self.network.parameters(), None)
        return self.feature_dims.device if param is None else param.device

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The score ``(N,)`` of a checked batch; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement score().")

    def _fit(self, clean: list[torch.Tensor], adversarial: list[torch.Tensor]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit().")

    def extra_repr(self) -> str:
        return f"network={type(self.network).__name__}, layers={self.layers}, pooling='{self.pooling.value}'"


def check_positive(name: str, value: Any, allow_zero: bool = False, integer: bool = False) -> Any:
    """``value`` if it is a finite number ``> 0`` (``>= 0`` with ``allow_zero``; an integer with ``integer``), else a
    ``ValueError`` quoting it."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>=' if allow_zero else '>'} 0, got {name}={value!r}.")
    return int(value) if integer else float(value)
