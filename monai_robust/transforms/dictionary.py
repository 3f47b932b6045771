# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Dictionary twins of :mod:`monai_robust.transforms.array`: each only wraps the array transform (MONAI's
``RandGaussianNoised`` pattern), with the ``D``/``Dict`` aliases MONAI gives every dictionary transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from monai_robust.attacks.base import Attack
from monai_robust.transforms.array import AdversarialPerturb, ApplyPerturbation

__all__ = [
    "AdversarialPerturbD",
    "AdversarialPerturbDict",
    "AdversarialPerturbd",
    "ApplyPerturbationD",
    "ApplyPerturbationDict",
    "ApplyPerturbationd",
]


class AdversarialPerturbd(RandomizableTransform, MapTransform):
    """Dictionary-based wrapper of :class:`~monai_robust.transforms.array.AdversarialPerturb`: replaces
    ``data[key]`` (a collated batch) by adversarial examples against ``data[label_key]``.

    By default each key is overwritten, as every MONAI dictionary transform does; with ``new_key_prefix`` the
    clean image stays under ``key`` and the adversarial one is written to ``new_key_prefix + key`` (MONAI's
    naming, as in ``ForegroundMaskd``). One random draw is shared by all keys.

    Args:
        keys: keys of the images to perturb.
        attack: any :class:`~monai_robust.attacks.base.Attack`.
        label_key: key of the labels (of the targets for a targeted attack).
        eps: the budget of a bounded attack, as in :class:`AdversarialPerturb`; default the attack's own.
        new_key_prefix: write the result to ``new_key_prefix + key`` instead of overwriting ``key``.
        allow_missing_keys: don't raise when a key in ``keys`` is missing.

    Raises:
        ValueError: When ``attack`` is not an Attack or ``new_key_prefix`` is an empty string.

    Example::

        >>> perturb = AdversarialPerturbd("image", PGD(net, 2 / 255, bounds=(0.0, 1.0)), new_key_prefix="adv_")
        >>> batch = perturb(batch)  # batch["image"] clean, batch["adv_image"] adversarial
    """

    backend = AdversarialPerturb.backend

    def __init__(
        self,
        keys: KeysCollection,
        attack: Attack,
        label_key: Hashable = "label",
        new_key_prefix: str | None = None,
        allow_missing_keys: bool = False,
        eps: float | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if new_key_prefix is not None and (not isinstance(new_key_prefix, str) or not new_key_prefix):
            raise ValueError(f"new_key_prefix must be a non-empty string or None, got new_key_prefix={new_key_prefix!r}.")
        self.adversarial_perturb = AdversarialPerturb(attack, eps)
        self.label_key = label_key
        self.new_key_prefix = new_key_prefix

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> AdversarialPerturbd:
        """Seeds the wrapped array transform (and through it the attack)."""
        super().set_random_state(seed, state)
        self.adversarial_perturb.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws the seed shared by all keys of the next call."""
        self.adversarial_perturb.randomize(None)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """
        Raises:
            KeyError: When ``label_key`` is missing, or a key is missing and ``allow_missing_keys`` is False.
            ValueError: When ``new_key_prefix + key`` already exists in ``data``.
            RuntimeError: When called in a DataLoader worker process.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        if self.label_key not in d:
            raise KeyError(f"label_key {self.label_key!r} is not in the data (keys: {list(d)}).")
        if self.new_key_prefix is not None:
            taken = [f"{self.new_key_prefix}{k}" for k in keys if f"{self.new_key_prefix}{k}" in d]
            if taken:
                raise ValueError(f"new keys {taken} already exist in the data; choose another new_key_prefix.")
        self.randomize(None)
        for key in keys:
            out = self.adversarial_perturb(d[key], d[self.label_key], randomize=False)
            d[key if self.new_key_prefix is None else f"{self.new_key_prefix}{key}"] = out
        return d


class ApplyPerturbationd(MapTransform):
    """Dictionary-based wrapper of :class:`~monai_robust.transforms.array.ApplyPerturbation`: adds the fixed δ
    to ``data[key]`` for each key (a batch or a single image), then clips to ``bounds``.

    Args:
        keys: keys of the images to perturb.
        delta: Tensor, ndarray or path of a ``.pt`` file, shape ``(C, *spatial)`` or ``(1, C, *spatial)``.
        bounds: ``(low, high)`` to clip to, or ``None`` for no clipping.
        allow_missing_keys: don't raise when a key in ``keys`` is missing.

    Raises:
        ValueError: On an unreadable or malformed δ, or bad ``bounds``.

    Example::

        >>> batch = ApplyPerturbationd("image", "uap.pt", bounds=(0.0, 1.0))(batch)
    """

    backend = ApplyPerturbation.backend

    def __init__(
        self,
        keys: KeysCollection,
        delta: Any,
        bounds: tuple[float, float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.apply_perturbation = ApplyPerturbation(delta, bounds)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.apply_perturbation(d[key])
        return d


AdversarialPerturbD = AdversarialPerturbDict = AdversarialPerturbd
ApplyPerturbationD = ApplyPerturbationDict = ApplyPerturbationd
