# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Mixed precision for attacks that stays exact: which low-precision dtype a call runs its iterations in, and the
fp32 check (and refinement) that decides success and the returned example.

The iterations of FGSM, BIM, PGD and APGD can run the model under ``torch.autocast`` (bf16 on CPUs with native
bf16, bf16 or fp16 on CUDA): about 1.65x faster on MONAI DenseNet121-2D on an ``avx512_bf16`` Xeon (issue 19). But
a bf16 forward rounds the input to 8 significant bits (about 1/255 near 1.0), so the iterations' own idea of success
is not the fp32 model's, and an attack left at that is weaker (issue 19 measured robust accuracy 0.969 vs 0.953 on
64 images). :func:`exact_fp32` therefore checks every returned example in fp32 (budget, bounds, success) and gives
the samples that are not adversarial in fp32 a few more fp32 steps (FGSM: the fp32 FGSM step itself).

Default (``amp=None``): on where the hardware computes bf16 natively (CPU flags ``avx512_bf16`` or ``amx_bf16``;
CUDA devices with bf16) unless the environment variable ``MONAI_ROBUST_FP32=1`` forces fp32; ``amp=False`` forces
fp32 for one attack or one call, ``amp=True`` asks for autocast anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from monai_robust.attacks.functional import clip_to_bounds, lp_project

if TYPE_CHECKING:  # the attack types live in base.py, which imports this module
    from monai_robust.attacks.base import BoundedAttack

__all__ = ["FP32_ENV", "MixedPrecisionReport", "cpu_bf16_flags", "exact_fp32", "fp32_forced", "low_precision_dtype"]

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
        amp: ``None`` (default: native bf16 where the hardware has it), ``True`` (autocast anywhere, at the
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
        refined: samples not adversarial in fp32 after the low-precision iterations, given fp32 steps.
        success: ``(N,)`` bool, each returned example adversarial for the fp32 model (decided in fp32).
    """

    dtype: torch.dtype
    n: int
    refined: int
    success: torch.Tensor


def exact_fp32(
    attack: BoundedAttack, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, eps: float, dtype: torch.dtype
) -> tuple[torch.Tensor, MixedPrecisionReport]:
    """The fp32 end of a mixed-precision call: budget and bounds enforced in fp32, success decided in fp32, and
    :meth:`~monai_robust.attacks.base.BoundedAttack.refine` run in fp32 on the samples that are not adversarial.

    Args:
        attack: the attack of the call (in its ``attack_mode``).
        x: the clean images.
        adv: the low-precision iterations' result.
        labels: the call's labels (targets when targeted).
        eps: the call's budget.
        dtype: the autocast dtype of the iterations (for the report).

    Returns:
        The adversarial examples and the :class:`MixedPrecisionReport`.

    Example::

        >>> adv, report = exact_fp32(pgd, x, adv_bf16, y, 4 / 255, torch.bfloat16)
    """
    with torch.autocast(x.device.type, enabled=False):
        adv = clip_to_bounds(x + lp_project(adv.detach().float() - x, eps, attack.lp), attack.bounds)
        with torch.no_grad():
            ok = attack.success(attack.logits(adv, labels), labels)
        todo = (~ok).nonzero().flatten()
        if todo.numel():
            adv[todo] = attack.refine(x[todo], adv[todo], labels[todo], eps).detach()
            with torch.no_grad():
                ok[todo] = attack.success(attack.logits(adv[todo], labels[todo]), labels[todo])
    return adv, MixedPrecisionReport(dtype, int(x.shape[0]), int(todo.numel()), ok)
