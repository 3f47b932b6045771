# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Mixed precision for attacks that stays exact: which low-precision dtype a call runs its iterations in, and the
fp32 check (and refinement) that decides success and the returned example.

The iterations of FGSM, BIM, PGD and APGD can run the model under ``torch.autocast`` (bf16 on CPUs with native
bf16, bf16 or fp16 on CUDA): about 1.65x faster on MONAI DenseNet121-2D on an ``avx512_bf16`` Xeon (issue 19). But
a bf16 forward rounds the input to 8 significant bits (about 1/255 near 1.0), so the iterations' own idea of success
is not the fp32 model's, and an attack left at that is weaker (issue 19 measured robust accuracy 0.969 vs 0.953 on
64 images). The attacks therefore run their last ``ceil(num_steps / 5)`` iterations in fp32 (replacing, not adding:
the same number of forward and backward passes as the fp32 attack), and :func:`exact_fp32` checks every returned
example in fp32 (budget, bounds, success) whose fp32 success the attack does not already know (FGSM: the fp32 step
itself for the samples its bf16 step did not break).

Default (``amp=None``): fp32 for every attack (``amp_by_default`` is False throughout): the +-0.005 agreement with
fp32 required for a default is measured in ``bench/README.md`` (``## Mixed precision``). ``amp=True`` asks for
autocast where the hardware has bf16 (or on CUDA); the environment variable ``MONAI_ROBUST_FP32=1`` forces fp32
even then; ``amp=False`` forces fp32 for one attack or one call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from monai_robust.attacks.functional import batch_view, clip_to_bounds, lp_project

if TYPE_CHECKING:  # the attack types live in base.py, which imports this module
    from monai_robust.attacks.base import BoundedAttack

__all__ = [
    "FP32_ENV",
    "MixedPrecisionReport",
    "cpu_bf16_flags",
    "exact_fp32",
    "fp32_forced",
    "fp32_steps",
    "full_precision",
    "low_precision_dtype",
]

_ROUNDING_ULPS = 4
"""Largest change, in float32 ulps of the values involved, by which re-projecting an example counts as rounding."""

FP32_ENV = "MONAI_ROBUST_FP32"
"""Environment variable: ``1`` (or ``true``/``yes``/``on``) forces every attack to run in fp32, ``amp=True`` included."""


def fp32_forced() -> bool:
    """True when :data:`FP32_ENV` asks for fp32 everywhere.

    Example::

        >>> os.environ["MONAI_ROBUST_FP32"] = "1"; fp32_forced()
        True
    """
    return os.environ.get(FP32_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 CPU features of this machine: a subset of ``("avx512_bf16", "amx_bf16")``.

    Asks PyTorch (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, cross-platform) and falls
    back to the flags of ``/proc/cpuinfo``.

    Example::

        >>> cpu_bf16_flags()  # on a Sapphire Rapids Xeon
        ('avx512_bf16', 'amx_bf16')
    """
    found: set[str] = set()
    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    for flag, probe in probes:
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                found.add(flag)
        except RuntimeError:  # pragma: no cover - a build without the probe
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                found |= {f for f, _ in probes} & set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return tuple(f for f, _ in probes if f in found)


def _native_dtype(device: torch.device) -> torch.dtype | None:
    """The low-precision dtype this device computes natively, or None."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_flags() else None
    return None


def low_precision_dtype(amp: bool | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of an attack's iterations on ``device``, or None for fp32.

    Args:
        amp: ``None`` (native bf16 where the hardware has it; attacks pass False for it unless their
            ``amp_by_default``), ``True`` (autocast anywhere, at the
            device's autocast dtype: bf16 on CPU and fp16 on CUDA unless ``torch.set_autocast_dtype`` says
            otherwise), ``False`` (fp32).
        device: the model's device.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None; always None while :data:`FP32_ENV` is set.

    Example::

        >>> low_precision_dtype(False, "cpu") is None
        True
    """
    device = torch.device(device)
    if amp is False or fp32_forced():
        return None
    if amp is None:
        return _native_dtype(device)
    return torch.get_autocast_dtype(device.type) if device.type in ("cpu", "cuda") else None


@dataclass
class MixedPrecisionReport:
    """What the fp32 check of one mixed-precision call found.

    Attributes:
        dtype: the iterations' autocast dtype.
        n: samples in the call.
        refined: samples not adversarial in fp32 after the iterations, given extra fp32 steps by the attack's
            ``refine`` (0 where the attack's fp32 iterations already replaced its last ones).
        success: ``(N,)`` bool, each returned example adversarial for the fp32 model (decided in fp32).
        checked: samples whose success needed the fp32 check's forward pass (the others' returned example was
            already evaluated in fp32 by the attack's own iterations).
    """

    dtype: torch.dtype
    n: int
    refined: int
    success: torch.Tensor
    checked: int = -1


def full_precision(device_type: str) -> torch.autocast:
    """The context that turns autocast off on ``device_type`` (inside an attack's bf16/fp16 autocast): fp32.

    Example::

        >>> with torch.autocast("cpu", dtype=torch.bfloat16), full_precision("cpu"):
        ...     torch.is_autocast_enabled("cpu")
        False
    """
    return torch.autocast(device_type, enabled=False)


def fp32_steps(num_steps: int) -> int:
    """How many of an attack's last iterations run in fp32 in a mixed-precision call: ``ceil(num_steps / 5)``.

    Example::

        >>> fp32_steps(10), fp32_steps(5), fp32_steps(1)
        (2, 1, 1)
    """
    return math.ceil(num_steps / 5)


def exact_fp32(
    attack: BoundedAttack,
    x: torch.Tensor,
    adv: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    dtype: torch.dtype,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, MixedPrecisionReport]:
    """The fp32 end of a mixed-precision call: budget and bounds enforced in fp32, success decided in fp32, and
    :meth:`~monai_robust.attacks.base.BoundedAttack.refine` run in fp32 on the samples that are not adversarial.

    Args:
        attack: the attack of the call (in its ``attack_mode``).
        x: the clean images.
        adv: the iterations' result.
        labels: the call's labels (targets when targeted).
        eps: the call's budget.
        dtype: the autocast dtype of the iterations (for the report).
        known: ``(mask, success)``, two ``(N,)`` bool tensors: the samples whose returned example the attack's own
            fp32 iterations already evaluated, and their fp32 success there (APGD). Those need no check forward
            and are not refined.

    Returns:
        The adversarial examples and the :class:`MixedPrecisionReport`.

    Example::

        >>> adv, report = exact_fp32(pgd, x, adv_bf16, y, 4 / 255, torch.bfloat16)
    """
    with full_precision(x.device.type):
        given = adv.detach().float()
        adv = clip_to_bounds(x + lp_project(given - x, eps, attack.lp), attack.bounds)
        ulps = _ROUNDING_ULPS * torch.finfo(torch.float32).eps * torch.maximum(given.abs(), x.abs())
        kept = ((adv - given).abs() <= ulps).flatten(1).all(dim=1)  # already projected: keep it bit for bit
        adv = torch.where(batch_view(kept, adv).bool(), given, adv)
        mask, ok = known if known is not None else (torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), None)
        mask = mask & kept  # a known verdict holds for the very example evaluated
        ok = torch.zeros_like(mask) if ok is None else ok.clone()
        check = (~mask).nonzero().flatten()
        if check.numel():
            with torch.no_grad():
                ok[check] = attack.success(attack.logits(adv[check], labels[check]), labels[check])
        todo = (~ok & ~mask).nonzero().flatten()
        refined = None
        if todo.numel():
            refined = attack.refine(x[todo], adv[todo], labels[todo], eps)
        if refined is not None:
            adv[todo] = refined.detach()
            with torch.no_grad():
                ok[todo] = attack.success(attack.logits(adv[todo], labels[todo]), labels[todo])
    n_refined = 0 if refined is None else int(todo.numel())
    return adv, MixedPrecisionReport(dtype, int(x.shape[0]), n_refined, ok, int(check.numel()))
