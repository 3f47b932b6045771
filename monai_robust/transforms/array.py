# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Array transforms that perturb images: :class:`AdversarialPerturb` runs any attack on a collated batch and
:class:`ApplyPerturbation` adds a fixed δ (a universal perturbation or a noise control).

Both follow MONAI's conventions: ``backend``, the caller's type back (ndarray in, ndarray out; MetaTensor in,
MetaTensor out), and provenance in the MetaTensor's metadata (``meta["adversarial"]`` /
``meta["perturbation"]``) and, while MONAI's transform tracing is on, as one entry per sample in
``applied_operations``. Neither perturbation can be undone, so neither transform is an ``InvertibleTransform``:
``Compose.inverse`` skips them, and because MONAI matches each inverse to its own entry, the spatial transforms
applied before them can still be inverted (the record stays, saying the image is still perturbed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import RandomizableTransform, Transform
from monai.transforms.inverse import TraceableTransform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_robust.attacks.base import Attack, BoundedAttack
from monai_robust.attacks.functional import clip_to_bounds
from monai_robust.attacks.threat import _check_bounds

__all__ = [
    "ADVERSARIAL_META_KEY",
    "PERTURBATION_META_KEY",
    "AdversarialPerturb",
    "ApplyPerturbation",
    "attack_provenance",
    "load_perturbation",
]

ADVERSARIAL_META_KEY = "adversarial"
"""Key of :class:`AdversarialPerturb`'s provenance record in ``MetaTensor.meta``."""
PERTURBATION_META_KEY = "perturbation"
"""Key of :class:`ApplyPerturbation`'s provenance record in ``MetaTensor.meta``."""

_SCALARS = (bool, int, float, str, np.integer, np.floating)


def attack_provenance(attack: Attack, eps: float | None = None) -> dict[str, Any]:
    """What an attack did, as a flat dict of scalars that MONAI can collate and decollate.

    Keys: ``attack`` (class name), ``eps`` (the budget of the call; ``inf`` for a minimisation attack), ``lp``, ``targeted``, ``seed`` (``attack.last_seed``, which
    reproduces the random start), ``bounds_low``/``bounds_high`` when there are bounds, and the attack's own
    hyperparameters (``num_steps``, ``step_size``, ``beta`` ...) when it has them.

    Args:
        attack: an attack that has been called at least once (for the seed).
        eps: the budget the call used; default the bounded attack's own ``eps`` (``inf`` for minimisation attacks).

    Returns:
        The record; values are Python scalars and strings only (no ``None``, no tuples).

    Example::

        >>> attack_provenance(pgd)["attack"]
        'PGD'
    """
    rec: dict[str, Any] = {
        "attack": type(attack).__name__,
        "eps": float(eps if eps is not None else (attack.eps if isinstance(attack, BoundedAttack) else math.inf)),
        "lp": str(attack.lp.value),
        "targeted": bool(attack.targeted),
        "seed": -1 if attack.last_seed is None else int(attack.last_seed),
    }
    if attack.bounds is not None:
        rec["bounds_low"], rec["bounds_high"] = float(attack.bounds[0]), float(attack.bounds[1])
    for k in getattr(attack, "_repr_keys", ()):
        v = getattr(attack, k, None)
        if isinstance(v, _SCALARS):
            rec[k] = v.item() if isinstance(v, (np.integer, np.floating)) else v
    return rec


def _record(transform: TraceableTransform, out: Any, meta_key: str, rec: dict[str, Any]) -> Any:
    """Writes ``rec`` into ``out.meta[meta_key]`` (per-sample lists for a collated batch, so ``decollate_batch``
    gives every sample its record) and appends a non-invertible entry to each sample's ``applied_operations``.
    Metadata containers are replaced, never mutated, so an input sharing them keeps its own record."""
    if not isinstance(out, MetaTensor) or not get_track_meta():
        return out
    n = out.shape[0] if out.ndim else 0
    per_sample = bool(out.is_batch) and n > 0
    meta = dict(out.meta)
    meta[meta_key] = {k: [v] * n for k, v in rec.items()} if per_sample else dict(rec)
    out.meta = meta
    if transform.tracing:
        info = transform.get_transform_info()
        info[TraceKeys.ORIG_SIZE] = tuple(int(s) for s in out.shape[(2 if per_sample else 1) :])
        info[TraceKeys.LAZY] = False
        info[TraceKeys.EXTRA_INFO] = {**rec, "invertible": False}
        ops = out.applied_operations  # collated: one list per sample, TraceKeys.NONE for an empty one
        if per_sample and (not ops or (len(ops) == n and all(isinstance(o, list) or o == TraceKeys.NONE for o in ops))):
            ops = ops or [[] for _ in range(n)]
            out.applied_operations = [(list(o) if isinstance(o, list) else []) + [dict(info)] for o in ops]
        else:
            out.applied_operations = list(ops) + [info]
    return out


def _refuse_in_worker(name: str, attack: Attack, img: Any) -> None:
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    param = next(attack.network.parameters(), None)
    model_dev = "no parameters" if param is None else str(param.device)
    data_dev = str(img.device) if isinstance(img, torch.Tensor) else "cpu (numpy)"
    raise RuntimeError(
        f"{name} must not run in a DataLoader worker process (worker {info.id} of {info.num_workers}; model on "
        f"{model_dev}, data on {data_dev}): each worker crafts against its own copy of the model, which is stale "
        "once the model trains and cannot use a GPU model. Apply it after collation in the main process, e.g. in "
        "a Compose run on each batch or in an engine's prepare_batch."
    )


class AdversarialPerturb(RandomizableTransform, TraceableTransform):
    """Replaces a collated batch by adversarial examples from any attack (FGSM, PGD, CW, SMIA ...).

    Like MONAI's batch transforms (``MixUp``), it works on an ``(N, C, *spatial)`` batch after collation, in the
    main process; it refuses to run in a DataLoader worker. It is seeded through MONAI's randomizable protocol:
    each call draws one seed from ``self.R`` and reseeds the attack with it, so ``set_random_state`` makes the
    output reproducible. The record in ``meta["adversarial"]`` (see :func:`attack_provenance`) holds the
    attack's own seed (``attack.last_seed``), from which its random start can be replayed.

    Args:
        attack: an :class:`~monai_robust.attacks.base.Attack` holding the network and the threat model.
        eps: the budget passed to a :class:`~monai_robust.attacks.base.BoundedAttack` at each call (model-input
            units); default the attack's own ``eps``. Not allowed for a minimisation attack (CW, DeepFool).

    Raises:
        ValueError: When ``attack`` is not an :class:`~monai_robust.attacks.base.Attack`, or ``eps`` is given for
            a minimisation attack or is not a valid budget of the attack.

    Example::

        >>> perturb = AdversarialPerturb(PGD(net, eps=2 / 255, bounds=(0.0, 1.0))).set_random_state(0)
        >>> adv = perturb(batch["image"], batch["label"])  # same type as batch["image"]
        >>> adv.meta["adversarial"]["attack"]  # per-sample list for a collated MetaTensor
        ['PGD', 'PGD', ...]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, attack: Attack, eps: float | None = None) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if not isinstance(attack, Attack):
            raise ValueError(f"attack must be a monai_robust Attack such as PGD(...), got {type(attack).__name__}.")
        if eps is not None and not isinstance(attack, BoundedAttack):
            raise ValueError(f"{type(attack).__name__} is a minimisation attack without a budget, got eps={eps!r}.")
        if isinstance(attack, BoundedAttack) and eps is None and attack.eps is None:
            raise ValueError(f"{type(attack).__name__} was built without eps: give eps= to {type(self).__name__}.")
        self.attack = attack
        self.eps = None if eps is None else attack.check_eps(eps)
        self._seed: int | None = None

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> AdversarialPerturb:
        """Seeds this transform and the wrapped attack (``attack.set_random_state``)."""
        super().set_random_state(seed, state)
        self.attack.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws the seed of the next attack from ``self.R``."""
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: NdarrayOrTensor, label: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: ``(N, C, *spatial)`` batch (ndarray, Tensor or MetaTensor) inside the attack's bounds.
            label: ``(N,)`` class indices (targets for a targeted attack), or what the attack's loss takes.
            randomize: draw a new seed (``False`` reuses the last one, as the dictionary twin does per key).

        Returns:
            The adversarial batch, of the type, dtype and device of ``img``, with provenance when a MetaTensor.

        Raises:
            RuntimeError: When called in a DataLoader worker process.
            ValueError: From the attack, on a bad batch or labels.
        """
        _refuse_in_worker(type(self).__name__, self.attack, img)
        if randomize or self._seed is None:
            self.randomize()
        self.attack.set_random_state(self._seed)
        out = self.attack(img, label) if self.eps is None else self.attack(img, label, eps=self.eps)
        return _record(self, out, ADVERSARIAL_META_KEY, attack_provenance(self.attack, self.eps))


def load_perturbation(delta: Any) -> tuple[torch.Tensor, str]:
    """Reads a fixed perturbation from a Tensor, an ndarray or a ``.pt`` file.

    Args:
        delta: Tensor/ndarray/MetaTensor of shape ``(C, *spatial)`` or ``(1, C, *spatial)``, or the path of a
            ``.pt`` file holding such a tensor (or a dict with the tensor under ``"delta"``).

    Returns:
        ``(delta, source)``: a float tensor on the CPU and where it came from (the path, ``"tensor"`` or
        ``"ndarray"``).

    Raises:
        ValueError: When the file does not exist or holds no tensor, or δ has fewer than 2 dimensions, is empty
            or contains NaN/Inf.

    Example::

        >>> delta, source = load_perturbation(torch.zeros(1, 28, 28))
        >>> source
        'tensor'
    """
    if isinstance(delta, (str, os.PathLike)):
        path = Path(delta)
        if not path.is_file():
            raise ValueError(f"perturbation file {str(path)!r} does not exist.")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping):
            if "delta" not in obj:
                raise ValueError(f"perturbation file {str(path)!r} holds a dict without 'delta' (keys: {list(obj)}).")
            obj = obj["delta"]
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"perturbation file {str(path)!r} holds a {type(obj).__name__}, not a tensor.")
        source, t = str(path), obj
    elif isinstance(delta, (torch.Tensor, np.ndarray)):
        source = "ndarray" if isinstance(delta, np.ndarray) else "tensor"
        t = convert_to_tensor(delta, track_meta=False)
    else:
        raise ValueError(f"delta must be a Tensor, an ndarray or the path of a .pt file, got {type(delta).__name__}.")
    t = t.detach().to("cpu")
    t = t if t.is_floating_point() else t.float()
    if t.ndim < 2 or t.numel() == 0:
        raise ValueError(f"delta must be (C, *spatial) or (1, C, *spatial), got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"delta contains {int((~torch.isfinite(t)).sum())} NaN/Inf values.")
    return t, source


class ApplyPerturbation(TraceableTransform, Transform):
    """Adds a fixed perturbation δ to an image or a batch, then clips to ``bounds``.

    For a universal adversarial perturbation (Moosavi-Dezfooli et al., "Universal adversarial perturbations",
    CVPR 2017, https://arxiv.org/abs/1610.08401; Hirano et al., BMC Med Imaging 2021) or a random-noise control
    of the same norm. δ of shape ``(C, *spatial)`` or ``(1, C, *spatial)`` is broadcast over a collated batch
    ``(N, C, *spatial)``, and also applies to a single image ``(C, *spatial)`` inside a per-sample ``Compose``.
    The record ``meta["perturbation"]`` holds ``source``, ``delta_linf``, ``delta_l2``, ``delta_shape`` and the
    bounds.

    Args:
        delta: the perturbation in model-input units: Tensor, ndarray or path of a ``.pt`` file
            (see :func:`load_perturbation`).
        bounds: ``(low, high)`` to clip the result to, or ``None`` for no clipping (never a silent ``[0, 1]``).

    Raises:
        ValueError: On an unreadable or malformed δ, or ``bounds`` not ``low < high``.

    Example::

        >>> add = ApplyPerturbation("uap.pt", bounds=(0.0, 1.0))
        >>> perturbed = add(batch["image"])  # (N, C, H, W) or a single (C, H, W) image
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, delta: Any, bounds: tuple[float, float] | None = None) -> None:
        self.delta, self.source = load_perturbation(delta)
        self.bounds = _check_bounds(bounds)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: ``(N, C, *spatial)`` batch or ``(C, *spatial)`` image, floating point, ndarray/Tensor/MetaTensor.

        Returns:
            ``clip(img + δ, bounds)`` of the type, dtype and device of ``img``, with provenance when a MetaTensor.

        Raises:
            ValueError: When δ does not broadcast to ``img`` (both shapes are named) or ``img`` is not floating.
        """
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        if not torch.is_floating_point(img_t):
            raise ValueError(
                f"ApplyPerturbation needs a floating-point image, got dtype {img_t.dtype}; convert it first "
                "(e.g. EnsureType(dtype=torch.float32) and intensity scaling)."
            )
        delta = self._broadcastable(img_t).to(device=img_t.device, dtype=img_t.dtype)
        out = clip_to_bounds(img_t + delta, self.bounds)
        out, *_ = convert_to_dst_type(out, img)
        return _record(self, out, PERTURBATION_META_KEY, self.provenance())

    def provenance(self) -> dict[str, Any]:
        """The record written to ``meta["perturbation"]``: source, δ's L-inf and L2 norms and shape, bounds."""
        rec: dict[str, Any] = {
            "transform": type(self).__name__,
            "source": self.source,
            "delta_linf": float(self.delta.abs().max()),
            "delta_l2": float(self.delta.double().norm()),
            "delta_shape": "x".join(str(s) for s in self.delta.shape),
        }
        if self.bounds is not None:
            rec["bounds_low"], rec["bounds_high"] = self.bounds
        return rec

    def _broadcastable(self, img: torch.Tensor) -> torch.Tensor:
        d = self.delta
        if img.ndim == d.ndim + 1:  # (C, *spatial) over a batch
            d = d.unsqueeze(0)
        elif img.ndim == d.ndim - 1 and d.shape[0] == 1:  # (1, C, *spatial) on a single image
            d = d[0]
        try:
            ok = img.ndim == d.ndim and torch.broadcast_shapes(img.shape, d.shape) == img.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"delta of shape {tuple(self.delta.shape)} does not broadcast to the image of shape "
                f"{tuple(img.shape)}: expected (C, *spatial) or (1, C, *spatial) with the image's channels and "
                "spatial size."
            )
        return d
