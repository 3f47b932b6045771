# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Writes a robustness evaluation to disk: strict JSON with every number, PNG figures and the HTML page."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_robust.report.html import render_html
from monai_robust.report.plots import plot_detector_histograms, plot_examples, plot_metric_vs_eps
from monai_robust.report.table import key_label

__all__ = ["to_jsonable", "write_json", "write_report"]


def to_jsonable(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts: NaN/Inf become ``None``, tuples lists, tensors and numpy
    values Python numbers or lists, dataclass-like objects with ``to_dict`` their dict, anything else its ``str``.

    Example::

        >>> to_jsonable({"a": float("nan"), "b": (1, torch.tensor(2.0))})
        {'a': None, 'b': [1, 2.0]}
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist() if value.ndim else value.item())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    return str(value)


def write_json(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes ``results`` as indented strict JSON (see :func:`to_jsonable`).

    Example::

        >>> write_json(evaluator.results, "report/robustness.json")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(results), indent=1, allow_nan=False), encoding="utf-8")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "attack"


def _example_keys(results: dict[str, Any], examples: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """Per attack, its largest ε with example images (then each UAP): ``(caption, key, label)``, keys
    ``(name, eps)``, labels for file names (``pgd@0.0156863``, ``uap:name``)."""
    adv = examples.get("adversarial", {})
    out: list[tuple[str, Any, str]] = []
    for name in results.get("attacks", {}):
        keys = [(v.get("eps"), k) for k, v in adv.items() if v.get("attack") == name]
        if keys:
            eps, key = max(keys, key=lambda t: math.inf if t[0] is None else t[0])
            text = "inf" if eps is None or math.isinf(eps) else format(eps, ".4g")
            out.append((f"{name}, ε = {text}", key, key_label(name, eps)))
    for name in results.get("uaps", {}):
        for tag, caption in ((f"uap:{name}", f"UAP {name}"), (f"uap:{name}:control", f"UAP {name}: random control")):
            out += [(caption, k, tag) for k, v in adv.items() if v.get("attack") == tag]
    return out


def write_report(
    results: dict[str, Any],
    output_dir: str | os.PathLike,
    examples: dict[str, Any] | None = None,
    bounds: tuple[float, float] | None = None,
    title: str = "Robustness report",
) -> dict[str, Path]:
    """Writes ``robustness.json``, the PNG figures and ``index.html`` into ``output_dir``.

    Args:
        results: the evaluator's results.
        output_dir: the folder (created if needed).
        examples: the evaluator's ``examples`` for the example panels (optional).
        bounds: the intensity window for the example images; default ``results["meta"]["bounds"]``.
        title: the page title.

    Returns:
        ``{"json", "html", "accuracy", "balanced_accuracy", "auc", "detector", "examples/<name@eps or uap:name>"}`` -> paths of the files written.

    Raises:
        RuntimeError: Without matplotlib (the JSON is written first).

    Example::

        >>> paths = write_report(evaluator.results, "report/", evaluator.examples)
        >>> paths["html"]
        PosixPath('report/index.html')
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": write_json(results, out / "robustness.json")}
    figures: dict[str, Any] = {
        "accuracy": plot_metric_vs_eps(results, out / "accuracy_vs_eps.png", "accuracy"),
        "balanced_accuracy": plot_metric_vs_eps(results, out / "balanced_accuracy_vs_eps.png", "balanced_accuracy"),
        "auc": plot_metric_vs_eps(results, out / "auc_vs_eps.png", "auc"),
        "detector": plot_detector_histograms(results, out / "detector_scores.png"),
    }
    paths.update({k: v for k, v in figures.items() if v is not None})
    panels = []
    if examples:
        b = bounds if bounds is not None else results.get("meta", {}).get("bounds")
        for caption, key, label in _example_keys(results, examples):
            p = plot_examples(examples, out / f"examples_{_slug(label)}.png", key, tuple(b) if b else None)
            if p is not None:
                panels.append((caption, p))
                paths[f"examples/{label}"] = p
    paths["html"] = render_html(results, out / "index.html", figures, panels, title)
    return paths
