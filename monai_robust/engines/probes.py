# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Model probes for the validity checks of :mod:`monai_robust.metrics.validity`, run by
:class:`~monai_robust.engines.evaluator.RobustnessEvaluator` on its first batch: input gradients finite and non-zero
(:func:`gradient_probe`), eval-mode forwards that agree (:func:`randomness_probe`), and iterative attacks at growing
budgets up to the whole data range (:func:`unbounded_probe`).

Carlini et al., "On Evaluating Adversarial Robustness", 2019, https://arxiv.org/abs/1902.06705; Athalye et al.,
"Obfuscated Gradients Give a False Sense of Security", ICML 2018, https://arxiv.org/abs/1802.00420.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from monai_robust.attacks.base import BoundedAttack, NonFiniteError, attack_mode, default_loss
from monai_robust.metrics.robustness import to_class_predictions
from monai_robust.utils.enums import LpNorm

__all__ = ["ProbeOptions", "gradient_probe", "large_eps_ladder", "randomness_probe", "unbounded_probe"]


@dataclass(frozen=True)
class ProbeOptions:
    """Which probes the evaluator runs on its first batch, and on how many samples.

    Args:
        enabled: run the probes (gradients, randomness, and each iterative attack at growing budgets).
        probe_size: samples of the first batch used (>= 1).
        unbounded_accuracy: the accuracy an unbounded budget must reach ("about 0"), in [0, 1); the probe tries
            4, 16 and 64 times the largest ε, then the whole data range, until one gets there.

    Raises:
        ValueError: When ``probe_size < 1`` or ``unbounded_accuracy`` is outside [0, 1).

    Example::

        >>> ProbeOptions(probe_size=16)
    """

    enabled: bool = True
    probe_size: int = 32
    unbounded_accuracy: float = 0.05

    def __post_init__(self) -> None:
        k = self.probe_size
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"probe_size must be an integer >= 1, got probe_size={k!r}.")
        a = self.unbounded_accuracy
        if not (isinstance(a, (int, float)) and 0 <= a < 1):
            raise ValueError(f"unbounded_accuracy must lie in [0, 1), got unbounded_accuracy={a!r}.")


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label logit minus the best other logit (a single logit ``f``: ``f`` for label 1, ``-f`` for label 0)."""
    if logits.shape[1] == 1:
        return logits[:, 0] * (labels.reshape(-1).float() * 2 - 1)
    y = labels.reshape(-1).long()
    own = logits.gather(1, y[:, None]).squeeze(1)
    return own - logits.scatter(1, y[:, None], -math.inf).amax(dim=1)


def gradient_probe(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Input gradients of the cross-entropy loss and of the logit margin on a batch: are they finite and non-zero?

    A zero margin gradient means a non-differentiable (shattered) operation in the forward; a zero loss gradient
    with a non-zero margin gradient means a saturated softmax (use a margin loss, e.g. CW's or DLR). The network's
    mode and parameter gradients are restored afterwards.

    Args:
        network: the classifier, logits ``(N, classes)``.
        images: ``(N, C, *spatial)`` on the network's device.
        labels: ``(N,)`` class indices.

    Returns:
        ``{"n", "nonfinite_fraction", "zero_margin_fraction", "zero_loss_fraction", "mean_abs_gradient"}``:
        fractions of samples (a sample's gradient is zero when every entry is exactly 0).

    Example::

        >>> gradient_probe(net, images, labels)["zero_margin_fraction"]
        0.0
    """
    x = images.detach().clone().float()
    with attack_mode(network):
        x.requires_grad_(True)
        logits = network(x).float()
        (g_loss,) = torch.autograd.grad(default_loss(logits, labels).sum(), x, retain_graph=True, allow_unused=True)
        (g_margin,) = torch.autograd.grad(_margin(logits, labels).sum(), x, allow_unused=True)
    n = x.shape[0]
    g_loss = torch.zeros_like(x) if g_loss is None else g_loss
    g_margin = torch.zeros_like(x) if g_margin is None else g_margin
    flat_l, flat_m = g_loss.reshape(n, -1), g_margin.reshape(n, -1)
    nonfinite = ~torch.isfinite(flat_l).all(dim=1) | ~torch.isfinite(flat_m).all(dim=1)
    finite = flat_l[torch.isfinite(flat_l)]
    return {
        "n": int(n),
        "nonfinite_fraction": float(nonfinite.float().mean()),
        "zero_margin_fraction": float((flat_m == 0).all(dim=1).float().mean()),
        "zero_loss_fraction": float((flat_l == 0).all(dim=1).float().mean()),
        "mean_abs_gradient": float(finite.abs().mean()) if finite.numel() else math.nan,
    }


def randomness_probe(network: nn.Module, images: torch.Tensor, num_passes: int = 2) -> dict[str, Any]:
    """Forwards a batch ``num_passes`` times in eval mode: a model whose outputs differ is randomised (dropout kept
    on, random transforms in the forward, stochastic defenses), and gradient attacks must then average over its
    randomness (EOT, Athalye et al. 2018).

    Args:
        network: the classifier.
        images: ``(N, C, *spatial)`` on the network's device.
        num_passes: forward passes to compare (>= 2).

    Returns:
        ``{"randomized": bool, "max_abs_difference": float, "passes": int}``.

    Raises:
        ValueError: When ``num_passes < 2``.

    Example::

        >>> randomness_probe(net.eval(), images)["randomized"]
        False
    """
    if not isinstance(num_passes, int) or num_passes < 2:
        raise ValueError(f"num_passes must be an integer >= 2, got num_passes={num_passes!r}.")
    with attack_mode(network), torch.no_grad():
        outs = [network(images).float() for _ in range(num_passes)]
    diff = max(float((o - outs[0]).abs().max()) for o in outs[1:])
    scale = max(float(outs[0].abs().max()), 1.0)
    return {"randomized": bool(diff > 1e-5 * scale), "max_abs_difference": diff, "passes": num_passes}


def large_eps_ladder(
    lp: LpNorm, bounds: tuple[float, float] | None, eps_list: Sequence[float], x: torch.Tensor
) -> list[float]:
    """Growing budgets for the unbounded-budget probe: 4, 16 and 64 times the largest configured ε, then one covering
    the whole data range (the box width for L-inf, times ``sqrt(d)`` for L2, ``d`` for L1). A single huge budget is
    not enough: large steps overshoot, so accuracy at the full range can stay high where a smaller large ε works.

    Example::

        >>> large_eps_ladder(LpNorm.LINF, (0.0, 1.0), [0.01], torch.zeros(1, 1, 4, 4))
        [0.04, 0.16, 0.64, 1.0]
    """
    width = (bounds[1] - bounds[0]) if bounds is not None else 2.0 * max(float(x.abs().max()), 1e-6)
    d = x[0].numel()
    full = float(width if lp == LpNorm.LINF else width * (math.sqrt(d) if lp == LpNorm.L2 else d))
    finite = [e for e in eps_list if math.isfinite(e) and e > 0]
    top = max(finite) if finite else full / 64
    return sorted({min(top * f, full) for f in (4.0, 16.0, 64.0)} | {full})


def unbounded_probe(
    attack: BoundedAttack,
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list: Sequence[float],
    max_accuracy: float,
    seed: int | None = None,
    **call_kwargs: Any,
) -> dict[str, Any]:
    """Runs a bounded attack at the budgets of :func:`large_eps_ladder` until accuracy falls to ``max_accuracy``.

    Args:
        attack: the attack, called as ``attack(images, labels, eps=big, **call_kwargs)``.
        predict: ``images -> logits`` of the evaluated model.
        images: ``(k, C, *spatial)`` probe images; labels: ``(k,)`` class indices.
        eps_list: the configured budgets of the attack (model-input units).
        max_accuracy: accuracy accepted as "about 0".
        seed: seeds the attack before each budget (``None``: its own stream).

    Returns:
        ``{"n", "ladder": [{"eps", "accuracy" | "error"}], "eps", "accuracy"}`` (the lowest accuracy reached and its
        budget), or with ``"error"`` when no budget could be run.
    """
    ladder: list[dict[str, Any]] = []
    best = None
    for big in large_eps_ladder(attack.lp, attack.bounds, eps_list, images):
        try:
            if seed is not None:
                attack.set_random_state(seed)
            adv = attack(images, labels, eps=big, **call_kwargs)
            acc = float((to_class_predictions(predict(adv)) == labels).float().mean())
        except NonFiniteError:
            raise
        except Exception as e:  # recorded: the check reports it
            ladder.append({"eps": big, "error": f"{type(e).__name__}: {e}"})
            break
        ladder.append({"eps": big, "accuracy": acc})
        best = acc if best is None else min(best, acc)
        if acc <= max_accuracy:
            break
    entry: dict[str, Any] = {"n": int(images.shape[0]), "ladder": ladder}
    if best is None:
        entry["error"] = ladder[-1].get("error", "no probe ran") if ladder else "no probe ran"
    else:
        entry.update(eps=min((r for r in ladder if "accuracy" in r), key=lambda r: r["accuracy"])["eps"], accuracy=best)
    return entry
