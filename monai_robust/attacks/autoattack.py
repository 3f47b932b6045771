# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square) with the per-sample worst case, 2D and 3D, any
box, sound for two-class and single-logit heads; it records which attack broke each sample."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_robust.attacks.apgd import APGD
from monai_robust.attacks.apgdt import APGDT
from monai_robust.attacks.base import BoundedAttack, is_adversarial
from monai_robust.attacks.fab import FAB
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.precision import exact_fp32
from monai_robust.attacks.square import Square
from monai_robust.attacks.threat import _check_positive_int
from monai_robust.utils.enums import LpNorm

__all__ = ["STANDARD_ATTACKS", "AutoAttack", "AutoAttackResult"]

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
"""The attacks of AutoAttack's standard version, in its order."""

CLEAN = "clean"
"""``broken_by`` entry of a sample misclassified before any attack."""


@dataclass(frozen=True)
class AutoAttackResult:
    """Per sample, what broke it: ``"clean"`` (misclassified without attack), an attack's name, or ``None``
    (robust to every attack of the ensemble).

    Example::

        >>> r = AutoAttackResult(("clean", "apgd-ce", None))
        >>> r.robust.tolist(), r.counts()["apgd-ce"]
        ([False, False, True], 1)
    """

    broken_by: tuple[str | None, ...]

    @property
    def robust(self) -> torch.Tensor:
        """``(N,)`` bool: the samples no attack broke (and correctly classified clean)."""
        return torch.tensor([b is None for b in self.broken_by], dtype=torch.bool)

    def counts(self) -> dict[str | None, int]:
        """How many samples each attack broke first (``"clean"``, names in order, ``None`` for robust)."""
        return dict(Counter(self.broken_by))


class AutoAttack(BoundedAttack):
    r"""AutoAttack, standard version: APGD-CE, APGD-T, FAB-T and Square run in this order, each only on the
    samples that every earlier attack left correctly classified; a sample counts as broken by the first attack
    that misclassifies it within the budget (the per-sample worst case over the ensemble).

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks", ICML 2020, https://arxiv.org/abs/2003.01690 (the authors' code at
    https://github.com/fra31/auto-attack, ``version='standard'``).

    The standard settings: APGD-CE (:class:`~monai_robust.attacks.apgd.APGD`, cross-entropy, ``num_steps``
    iterations, 1 run); APGD-T (:class:`~monai_robust.attacks.apgdt.APGDT`, ``num_steps`` iterations, the
    ``num_target_classes`` = 9 most likely wrong classes, 1 run each); FAB-T (:class:`~monai_robust.attacks.fab.FAB`,
    same); Square (:class:`~monai_robust.attacks.square.Square`, ``num_queries`` = 5000, ``p_init`` = 0.8).
    ``num_steps`` defaults to the authors' 100 (torchattacks' ``AutoAttack`` uses its attacks' default of 10).

    Two classes, the norm in medical imaging (torchattacks' ``AutoAttack`` raises ``IndexError`` there: its targeted
    DLR reads the 3rd and 4th largest logits): the only wrong class is the one target, so APGD-T and FAB-T run once
    each (no duplicate target); APGD-T ascends the unnormalised margin ``z_t - z_y``, as DLR's normaliser does not
    exist (:func:`~monai_robust.attacks.apgdt.apgdt_loss`); FAB-T is untargeted FAB; Square uses the margin
    ``z_y - z_t``. Three classes: APGD-T's normaliser is ``z_π1 - z_π3``. A single-logit head ``f`` is read as the
    logits ``[0, f]`` (class 1 when ``f > 0``) by every attack but APGD-CE, which uses binary cross-entropy on ``f``.
    Multi-label heads are refused.

    Every returned point is checked: misclassified at a fresh forward pass, inside the Lp ball and ``bounds``;
    a sub-attack that broke the budget raises instead of counting.

    Args:
        network: classifier returning logits ``(N, classes)``.
        eps: default Lp radius in model-input units (or a :class:`~monai_robust.attacks.base.ThreatModel`, or
            ``None`` to give it at each call).
        attacks: names from :data:`STANDARD_ATTACKS`, run in the given order (default all four, standard order).
        num_steps: iterations of APGD-CE, APGD-T and FAB-T (>= 1).
        num_queries: Square's queries per sample (>= 1).
        num_target_classes: targets of APGD-T and FAB-T (>= 1; at most ``classes - 1`` are used).
        kwargs: ``lp`` (``"inf"`` or ``2``), ``bounds``, ``amp`` as in :class:`~monai_robust.attacks.base.Attack`
            (``amp=True``: the attacks iterate in bf16, APGD-CE and APGD-T their last ``ceil(num_steps / 5)``
            iterations in fp32; the clean pass and every attack's success are decided in fp32).

    Raises:
        ValueError: On an unknown or repeated attack name, ``lp`` = 1, ``targeted`` or ``loss``, or an argument out
            of range.
        RuntimeError: At a call, when a sub-attack returns a point outside the budget or the box.

    Example::

        >>> aa = AutoAttack(net, eps=8 / 255, bounds=(0.0, 1.0)).set_random_state(0)
        >>> adv, result = aa.run(images, labels)  # (N, C, H, W) or (N, C, D, H, W)
        >>> adv_small, result_small = aa.run(images, labels, eps=2 / 255)
        >>> robust_accuracy = float(result.robust.float().mean())
    """

    _repr_keys = ("attack_names", "num_steps", "num_queries", "num_target_classes")
    exact_amp = True  # every success below is decided in fp32 (see refine)
    amp_by_default = False  # opt-in: the +-0.005 agreement with fp32 is measured in bench/README.md

    def __init__(
        self,
        network: torch.nn.Module,
        eps: Any = None,
        *,
        attacks: Sequence[str] = STANDARD_ATTACKS,
        num_steps: int = 100,
        num_queries: int = 5000,
        num_target_classes: int = 9,
        **kwargs: Any,
    ) -> None:
        for key in ("targeted", "loss", "early_stop"):
            if key in kwargs:
                raise ValueError(f"AutoAttack sets {key} itself; got {key}={kwargs[key]!r}.")
        super().__init__(network, eps, early_stop=True, **kwargs)
        if self.lp not in (LpNorm.LINF, LpNorm.L2):
            raise ValueError(f"AutoAttack supports lp='inf' and lp=2, got lp={self.lp.value!r}.")
        names = tuple(attacks) if not isinstance(attacks, str) else (attacks,)
        unknown = [a for a in names if a not in STANDARD_ATTACKS]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"attacks must be distinct names from {STANDARD_ATTACKS}, got attacks={attacks!r}.")
        self.attack_names = names
        self.num_steps = _check_positive_int("num_steps", num_steps)
        self.num_queries = _check_positive_int("num_queries", num_queries)
        self.num_target_classes = _check_positive_int("num_target_classes", num_target_classes)
        common = {"lp": self.lp, "bounds": self.bounds, "amp": self.amp, "early_stop": True}
        targets = {"num_target_classes": self.num_target_classes}
        build = {  # no eps of their own: the ensemble passes the call's budget to each
            "apgd-ce": lambda: APGD(network, num_steps=self.num_steps, **common),
            "apgd-t": lambda: APGDT(network, num_steps=self.num_steps, **targets, **common),
            "fab-t": lambda: FAB(network, num_steps=self.num_steps, **targets, **common),
            "square": lambda: Square(network, num_queries=self.num_queries, **common),
        }
        self.attacks: dict[str, BoundedAttack] = {name: build[name]() for name in names}
        self.last_result: AutoAttackResult | None = None

    @property
    def uses_black_box(self) -> bool:
        """True when Square is among the ensemble's attacks (see :attr:`Attack.uses_black_box`)."""
        return any(a.uses_black_box for a in self.attacks.values())

    def run(self, images: Any, labels: Any, eps: float | None = None) -> tuple[Any, AutoAttackResult]:
        """The adversarial images (as :meth:`__call__` returns them) and what broke each sample.

        Args:
            images: ``(N, C, *spatial)`` ndarray, Tensor or MetaTensor inside ``bounds``.
            labels: ``(N,)`` or ``(N, 1)`` class indices (0/1 for a single-logit head).
            eps: the Lp radius in model-input units; default the constructor's.

        Returns:
            ``(adversarial images, AutoAttackResult)``.
        """
        adv = self(images, labels, eps)
        return adv, self.last_result

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        fp32 = torch.autocast(images.device.type, enabled=False)  # in mixed precision only the attacks run in bf16
        with torch.no_grad(), fp32:  # class_logits refuses multi-label heads before any attack runs
            robust = ~is_adversarial(*self.class_logits(images, labels))
        broken_by: list[str | None] = [None if r else CLEAN for r in robust.tolist()]
        adv = images.clone()
        for name, attack in self.attacks.items():
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            attack._generator, attack._checked = self._generator, False  # seeded through this ensemble
            attack._precision, attack._fp32_known = self._precision, None  # APGD-CE/-T: the last iterations in fp32
            out = attack.perturb(images[idx], labels[idx], eps)
            if self._precision is not None and attack.exact_amp:  # APGD-CE: its fp32 check
                known, attack._fp32_known = attack._fp32_known, None
                out, report = exact_fp32(attack, images[idx], out, labels[idx], eps, self._precision, known)
                fooled = report.success
            else:
                with torch.no_grad(), fp32:
                    fooled = is_adversarial(self.logits(out, labels[idx]), labels[idx])
            self._check_budget(name, out, images[idx], eps)
            adv[idx[fooled]] = out[fooled]
            robust[idx[fooled]] = False
            for i in idx[fooled].tolist():
                broken_by[i] = name
        self.last_result = AutoAttackResult(tuple(broken_by))
        if self._precision is not None:  # every verdict above is the fp32 model's: no check forward needed
            self._fp32_known = (torch.ones_like(robust), ~robust)
        return adv

    def refine(self, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor | None:
        """Nothing to refine: in mixed precision the ensemble already decides every sample in fp32 (a sample not
        broken in fp32 goes on to the next attack), so the samples its fp32 check finds not adversarial are the
        robust ones, each already attacked by every attack."""
        return None

    def _check_budget(self, name: str, out: torch.Tensor, x: torch.Tensor, eps: float) -> None:
        over = lp_norm(out - x, self.lp) > eps * (1 + 1e-5) + 1e-7
        outside = self.bounds is not None and bool(((out < self.bounds[0]) | (out > self.bounds[1])).any())
        if bool(over.any()) or outside or not bool(torch.isfinite(out).all()):
            raise RuntimeError(
                f"AutoAttack: {name} returned {int(over.sum())} point(s) outside the L{self.lp.value} ball of radius "
                f"{eps:g}{' or outside bounds' if outside else ''} (or non-finite); this is a bug in {name}."
            )
