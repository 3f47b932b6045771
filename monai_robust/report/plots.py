# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""PNG figures of a robustness evaluation, drawn with matplotlib's Agg canvas (no pyplot, no global backend switch):
robust metric vs ε per attack, example panels (clean / scaled perturbation / adversarial; middle slice for 3D), and
detector score histograms."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import

Figure, _has_mpl = optional_import("matplotlib.figure", name="Figure")
FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")

__all__ = ["plot_detector_histograms", "plot_examples", "plot_metric_vs_eps"]

_LP_TITLE = {"inf": "L∞", "2": "L2", "1": "L1"}


def _figure(width: float, height: float) -> Any:
    if not _has_mpl:
        raise RuntimeError("plots need matplotlib: pip install matplotlib.")
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_metric_vs_eps(results: dict[str, Any], path: str | os.PathLike, metric: str = "accuracy") -> Path | None:
    """Robust ``metric`` against ε, one line per attack, one panel per Lp norm; the clean value dashed and the
    random-noise controls dotted.

    Args:
        results: the evaluator's results.
        path: the PNG to write.
        metric: ``"accuracy"``, ``"balanced_accuracy"``, ``"auc"``, ``"sensitivity"``, ``"specificity"`` or
            ``"attack_success_rate"``.

    Returns:
        The path written, or ``None`` when no attack has a finite ε.

    Raises:
        RuntimeError: Without matplotlib.

    Example::

        >>> plot_metric_vs_eps(results, "report/accuracy_vs_eps.png")
    """
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, a in results.get("attacks", {}).items():
        pts = [
            (r["eps"], r[metric])
            for r in a.get("results", [])
            if r.get("status") == "ok" and _finite(r.get("eps")) and _finite(r.get(metric))
        ]
        clean = results.get("clean", {}).get(metric)
        if pts and _finite(clean) and metric != "attack_success_rate":
            pts.append((0.0, clean))  # every curve starts at the clean value
        if pts:
            series.setdefault(str(a.get("lp")), {})[name + (" (ref.)" if a.get("reference") else "")] = sorted(pts)
    controls: dict[str, list[tuple[float, float]]] = {}
    for c in results.get("controls", {}).get("noise", []):
        if _finite(c.get("eps")) and _finite(c.get(metric)):
            controls.setdefault(str(c["lp"]), []).append((c["eps"], c[metric]))
    if not series:
        return None
    lps = sorted(series)
    fig = _figure(5.2 * len(lps), 4.0)
    clean = results.get("clean", {}).get(metric)
    physical = results.get("meta", {}).get("intensity_map")
    label = {"accuracy": "robust accuracy", "balanced_accuracy": "robust balanced accuracy", "auc": "robust ROC AUC",
             "attack_success_rate": "attack success rate"}
    for i, lp in enumerate(lps):
        ax = fig.add_subplot(1, len(lps), i + 1)
        for name, pts in series[lp].items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", linewidth=2, label=name)
        if lp in controls:
            xs, ys = zip(*sorted(controls[lp]))
            ax.plot(xs, ys, linestyle=":", color="grey", marker=".", label=f"random noise ({_LP_TITLE.get(lp, lp)})")
        if _finite(clean):
            ax.axhline(clean, linestyle="--", color="black", linewidth=1, label=f"clean {clean:.3f}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"ε ({_LP_TITLE.get(lp, 'L' + lp)}, model units)")
        ax.set_ylabel(label.get(metric, metric))
        ax.set_title(f"{label.get(metric, metric)} vs ε, {_LP_TITLE.get(lp, 'L' + lp)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        if physical and physical.get("slope"):
            slope = abs(float(physical["slope"]))
            sec = ax.secondary_xaxis("top", functions=(lambda e, s=slope: e / s, lambda p, s=slope: p * s))
            sec.set_xlabel(f"ε ({physical.get('units', 'physical')})", fontsize=8)
    return _save(fig, path)


def _to_image(x: torch.Tensor) -> Any:
    """``(C, H, W)`` -> ``(H, W)`` (first channel) or ``(H, W, 3)`` for three channels, as numpy."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.shape[0] == 3:
        return x.permute(1, 2, 0).numpy()
    return x[0].numpy()


def _name(c: Any, names: Any) -> str:
    c = int(c)
    return str(names[c]) if names and c < len(names) else str(c)


def plot_examples(
    examples: dict[str, Any], path: str | os.PathLike, key: Any, bounds: tuple[float, float] | None = None
) -> Path | None:
    """Example panels of one attack: a row per example, columns clean image, perturbation (scaled to its own
    maximum, diverging colours) and adversarial image, with the labels and predictions in the titles.

    Args:
        examples: the evaluator's ``examples`` (``images`` ``(k, C, H, W)``, ``labels``, ``clean_pred``,
            ``adversarial[key]``; 3D volumes are already reduced to their middle slice).
        path: the PNG to write.
        key: the ``adversarial`` entry to draw, an ``(attack name, eps)`` tuple (e.g. ``("pgd", 4 / 255)``).
        bounds: the intensity window of the images; default the range of the clean images.

    Returns:
        The path written, or ``None`` when ``key`` has no examples.

    Raises:
        RuntimeError: Without matplotlib.

    Example::

        >>> plot_examples(evaluator.examples, "report/examples_pgd.png", ("pgd", 4 / 255), (0.0, 1.0))
    """
    adv = examples.get("adversarial", {}).get(key)
    if adv is None or "images" not in examples:
        return None
    clean, pert = examples["images"], adv["images"]
    k = clean.shape[0]
    if k == 0:
        return None
    names = examples.get("class_names")
    lo, hi = bounds if bounds is not None else (float(clean.min()), float(clean.max()))
    fig = _figure(8.4, 2.8 * k + 0.4)
    eps = adv.get("eps")
    eps_text = "inf" if eps is None or math.isinf(eps) else f"{eps:.4g}"
    lp = _LP_TITLE.get(str(adv.get("lp")), f"L{adv.get('lp', '')}")
    where = ", middle slice" if examples.get("spatial_dims", 2) > 2 else ""
    fig.suptitle(f"{adv.get('attack', key)}  (ε = {eps_text}, {lp}{where})", fontsize=11)
    for i in range(k):
        delta = (pert[i] - clean[i]).float()
        scale = float(delta.abs().max())
        y, pc, pa = (int(t) for t in (examples["labels"][i], examples["clean_pred"][i], adv["pred"][i]))
        ax = fig.add_subplot(k, 3, 3 * i + 1)
        ax.imshow(_to_image(clean[i]), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"clean: label {_name(y, names)}, pred {_name(pc, names)}", fontsize=9)
        ax = fig.add_subplot(k, 3, 3 * i + 2)
        img = ax.imshow(_to_image(delta / scale if scale > 0 else delta), cmap="seismic", vmin=-1, vmax=1)
        ax.set_title(f"perturbation ×{1 / scale:.3g} (max |δ| {scale:.3g})" if scale > 0 else "no perturbation", fontsize=9)
        fig.colorbar(img, ax=ax, fraction=0.046, pad=0.04)
        ax = fig.add_subplot(k, 3, 3 * i + 3)
        ax.imshow(_to_image(pert[i]), cmap="gray", vmin=lo, vmax=hi)
        colour = "red" if pa != y else "green"
        ax.set_title(f"adversarial: pred {_name(pa, names)}", fontsize=9, color=colour)
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)


def plot_detector_histograms(results: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Histograms of the detector's scores on clean images and on successful adversarial examples, one panel per
    attack at its largest ε that has scores, with the detection ROC AUC in the title.

    Args:
        results: the evaluator's results (``detector.histogram`` per attack and ε).
        path: the PNG to write.

    Returns:
        The path written, or ``None`` without detector histograms.

    Raises:
        RuntimeError: Without matplotlib.

    Example::

        >>> plot_detector_histograms(results, "report/detector.png")
    """
    panels = []
    for name, a in results.get("attacks", {}).items():
        rows = [r for r in a.get("results", []) if r.get("status") == "ok" and (r.get("detector") or {}).get("histogram")]
        if rows:
            panels.append((name, rows[-1]))
    for name, u in results.get("uaps", {}).items():
        if (u.get("perturbed", {}).get("detector") or {}).get("histogram"):
            panels.append((f"UAP {name}", u["perturbed"]))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig = _figure(4.6 * cols, 3.4 * rows_n)
    for i, (name, r) in enumerate(panels):
        h = r["detector"]["histogram"]
        edges = h["edges"]
        width = edges[1] - edges[0]
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        n_c, n_a = max(sum(h["clean"]), 1), max(sum(h["adversarial"]), 1)
        ax = fig.add_subplot(rows_n, cols, i + 1)
        ax.bar(centres, [v / n_c for v in h["clean"]], width=width, alpha=0.6, label=f"clean (n={sum(h['clean'])})")
        ax.bar(
            centres, [v / n_a for v in h["adversarial"]], width=width, alpha=0.6,
            label=f"adversarial (n={sum(h['adversarial'])})",
        )
        eps = r.get("eps")
        auc = r["detector"].get("auc")
        eps_text = "" if eps is None else f", ε={eps:.4g}"
        auc_text = f"{auc:.3f}" if _finite(auc) else "n/a"
        base = (r["detector"].get("baseline") or {}).get("auc")
        if _finite(base):
            auc_text += f" (1 − max softmax {base:.3f})"
        ax.set_title(f"{name}{eps_text}: detection AUC {auc_text}", fontsize=9)
        ax.set_xlabel("detector score (higher = adversarial)")
        ax.set_ylabel("fraction")
        ax.legend(fontsize=8)
    return _save(fig, path)
