# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``RobustnessTensorBoard``: robustness scalars (clean and robust metrics per attack and ε, UAP fooling rates),
per-attack curves over ε, and example images of x / δ / x + δ in TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_robust.handlers.robustness_curves import robustness_curves, tracking_name
from monai_robust.report.table import key_label

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, _has_tb = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["RobustnessTensorBoard", "example_grid"]

_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")


def example_grid(clean: torch.Tensor, adversarial: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Images for TensorBoard: for each example the clean image, the perturbation scaled to ``[0, 1]`` around 0.5
    (by the largest ``|δ|`` of the examples) and the adversarial image, intensities mapped to ``[0, 1]``.

    Args:
        clean: ``(k, C, H, W)`` clean images (3D volumes reduced to a slice beforehand).
        adversarial: the perturbed images, same shape.
        bounds: the intensity window; default the range of ``clean``.

    Returns:
        ``(3k, C, H, W)`` in ``[0, 1]``, ordered clean, δ, adversarial per example.

    Example::

        >>> example_grid(torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.1), (0.0, 1.0)).shape
        torch.Size([6, 1, 8, 8])
    """
    clean, adversarial = clean.detach().float().cpu(), adversarial.detach().float().cpu()
    lo, hi = bounds if bounds is not None else (float(clean.min()), float(clean.max()))
    span = (hi - lo) or 1.0
    delta = adversarial - clean
    scale = float(delta.abs().max()) or 1.0
    parts = [((clean - lo) / span).clamp(0, 1), (0.5 + 0.5 * delta / scale).clamp(0, 1), ((adversarial - lo) / span).clamp(0, 1)]
    return torch.stack(parts, dim=1).reshape((-1,) + tuple(clean.shape[1:]))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RobustnessTensorBoard:
    """At the end of each evaluation epoch: scalars ``<prefix>/clean/<metric>``, ``<prefix>/<attack>/<metric>/
    eps=<eps>``, ``<prefix>/uap:<name>/fooling_rate`` (step = the engine's epoch, so repeated evaluations during
    training draw curves); per attack the curves over ε ``<prefix>/curves/<attack>/<metric>`` with **step = ε index**
    (ascending ε, an unbounded attack last) and ``<prefix>/curves/<attack>/eps`` holding the ε of each step, so that
    TensorBoard plots robust accuracy, attack success and the guard's AUC against ε (the latest evaluation's curve);
    and per attack at its largest ε an image grid clean / scaled δ / adversarial.

    Args:
        summary_writer: a ``SummaryWriter``; default one writing to ``log_dir``.
        log_dir: the TensorBoard folder when no writer is given.
        tag_prefix: prefix of every tag.
        images: also write the example images.
        results_transform: ``engine -> results``; default ``engine.state.robustness``.
        examples_transform: ``engine -> examples``; default ``engine.examples``.
        global_step_transform: ``engine -> step``; default ``engine.state.epoch``.

    Raises:
        RuntimeError: Without tensorboard installed.

    Example::

        >>> RobustnessTensorBoard(log_dir="runs/robustness").attach(evaluator)
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag_prefix: str = "robustness",
        images: bool = True,
        results_transform: Callable[[Any], dict[str, Any] | None] = lambda e: getattr(e.state, "robustness", None),
        examples_transform: Callable[[Any], dict[str, Any] | None] = lambda e: getattr(e, "examples", None),
        global_step_transform: Callable[[Any], int] = lambda e: e.state.epoch,
    ) -> None:
        if summary_writer is None:
            if not _has_tb:
                raise RuntimeError("RobustnessTensorBoard needs tensorboard: pip install tensorboard.")
            summary_writer = SummaryWriter(log_dir=log_dir)
            self._internal = True
        else:
            self._internal = False
        self.writer = summary_writer
        self.tag_prefix = tag_prefix.rstrip("/")
        self.images = bool(images)
        self.results_transform = results_transform
        self.examples_transform = examples_transform
        self.global_step_transform = global_step_transform

    def attach(self, engine: Engine) -> None:
        """Writes at ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Writes the scalars and images of the completed evaluation."""
        results = self.results_transform(engine)
        if not results:
            return
        step = int(self.global_step_transform(engine))
        for tag, value in self.scalars(results).items():
            self.writer.add_scalar(f"{self.tag_prefix}/{tag}", value, step)
        for attack, points in robustness_curves(results).items():
            for i, (eps, metrics) in enumerate(points):
                base = f"{self.tag_prefix}/curves/{tracking_name(attack)}"
                for m, v in metrics.items():
                    self.writer.add_scalar(f"{base}/{m}", v, i)
                if eps is not None:
                    self.writer.add_scalar(f"{base}/eps", eps, i)
        if self.images:
            examples = self.examples_transform(engine) or {}
            bounds = results.get("meta", {}).get("bounds")
            for key, clean, adv in self._example_pairs(results, examples):
                grid = example_grid(clean, adv, tuple(bounds) if bounds else None)
                self.writer.add_images(f"{self.tag_prefix}/examples/{key}", grid, step, dataformats="NCHW")
        self.writer.flush()

    @staticmethod
    def scalars(results: dict[str, Any]) -> dict[str, float]:
        """The finite scalars of ``results``, by tag (without the prefix)."""
        out = {f"clean/{m}": results["clean"][m] for m in _METRICS if _finite(results.get("clean", {}).get(m))}
        for name, a in results.get("attacks", {}).items():
            for r in a.get("results", []):
                if r.get("status") != "ok":
                    continue
                eps = "inf" if r.get("eps") is None else f"{r['eps']:.6g}"
                out.update({f"{name}/{m}/eps={eps}": r[m] for m in _METRICS if _finite(r.get(m))})
                auc = (r.get("detector") or {}).get("auc")
                if _finite(auc):
                    out[f"{name}/detector_auc/eps={eps}"] = auc
        for name, u in results.get("uaps", {}).items():
            for part in ("perturbed", "control"):
                for m in ("fooling_rate", "targeted_success_rate", "accuracy"):
                    v = u.get(part, {}).get(m)
                    if _finite(v):
                        out[f"uap:{name}/{part}/{m}"] = v
        return out

    @staticmethod
    def _example_pairs(results: dict[str, Any], examples: dict[str, Any]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        if "images" not in examples:
            return []
        best: dict[str, tuple[float, str]] = {}
        for key, e in examples.get("adversarial", {}).items():
            eps = math.inf if e.get("eps") is None else float(e["eps"])
            name = str(e.get("attack", key))
            if name not in best or eps > best[name][0]:
                best[name] = (eps, key)
        return [
            (key_label(*key) if isinstance(key, tuple) else str(key), examples["images"], examples["adversarial"][key]["images"])
            for _, key in best.values()
        ]

    def close(self) -> None:
        """Closes the writer if this handler created it."""
        if self._internal:
            self.writer.close()
