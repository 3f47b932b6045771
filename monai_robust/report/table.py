# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The results of a robustness evaluation as rows and as a plain-text table for the console."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_table", "key_label", "summary_rows"]

COLUMNS = (
    ("what", "attack"),
    ("eps", "eps"),
    ("n", "n"),
    ("accuracy", "acc"),
    ("auc", "AUC"),
    ("sensitivity", "sens"),
    ("specificity", "spec"),
    ("attack_success_rate", "ASR"),
    ("retained", "retained"),
    ("linf", "Linf"),
    ("l2", "L2"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("detector_auc", "det.AUC"),
    ("note", "note"),
)


def key_label(name: str, eps: float | None) -> str:
    """The display name of one attack at one ε, e.g. for metric names and TensorBoard tags (never parsed back).

    Example::

        >>> key_label("pgd", 0.0039215), key_label("cw", float("inf"))
        ('pgd@0.0039215', 'cw@inf')
    """
    return f"{name}@{'inf' if eps is None or math.isinf(eps) else f'{eps:.8g}'}"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "-" if math.isnan(v) else "inf"
        return f"{v:.{digits}g}" if 0 < abs(v) < 1e-2 else f"{v:.{digits}f}"
    return str(v)


def _eps_text(row: dict[str, Any]) -> str:
    eps = row.get("eps")
    if eps is None or math.isinf(eps):
        return "inf"
    text = f"{eps:.4g}"
    if row.get("eps_physical") is not None:
        text += f" ({row['eps_physical']:.3g})"
    return text


def _mean(p: dict[str, Any], name: str) -> Any:
    return p.get(name, {}).get("mean") if isinstance(p, dict) else None


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per clean / attack-and-ε / UAP / control result, with the headline numbers.

    Args:
        results: the evaluator's results (or the JSON read back).

    Returns:
        Rows ``{"what", "eps", "n", "accuracy", "auc", "sensitivity", "specificity", "attack_success_rate",
        "retained", "linf", "l2", "psnr", "ssim", "detector_auc", "note", "group"}``; perturbation sizes are means
        over the successful adversarial examples, ``retained`` is robust / clean accuracy.

    Example::

        >>> [r["what"] for r in summary_rows(results)][:2]
        ['clean', 'fgsm']
    """
    clean = results.get("clean", {})
    rows = [
        {
            "group": "clean",
            "what": "clean",
            "eps": "0",
            "n": clean.get("n"),
            **{k: clean.get(k) for k in ("accuracy", "auc", "sensitivity", "specificity")},
        }
    ]
    for name, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            row: dict[str, Any] = {"group": "attack", "what": name, "eps": _eps_text(r)}
            if r.get("status") != "ok":
                row["note"] = f"{r.get('status', '').upper()}: {r.get('error', '')}"[:80]
                rows.append(row)
                continue
            p = r.get("perceptibility", {})
            row.update(
                {
                    k: r.get(k)
                    for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")
                }
            )
            row.update(
                retained=r.get("performance_retained", {}).get("accuracy"),
                linf=_mean(p, "linf"),
                l2=_mean(p, "l2"),
                psnr=_mean(p, "psnr_db"),
                ssim=_mean(p, "ssim"),
                detector_auc=(r.get("detector") or {}).get("auc"),
                note="reference" if a.get("reference") else "",
            )
            rows.append(row)
    for name, u in results.get("uaps", {}).items():
        for part in ("perturbed", "control"):
            r = u.get(part, {})
            p = r.get("perceptibility", {})
            note = f"fooling {_fmt(r.get('fooling_rate'))}"
            if r.get("targeted_success_rate") is not None:
                note += f", targeted {_fmt(r['targeted_success_rate'])}"
            rows.append(
                {
                    "group": "uap",
                    "what": f"UAP {name}" + (" (noise control)" if part == "control" else ""),
                    "eps": f"{u.get('eps', math.nan):.4g} L{u.get('lp')}",
                    **{k: r.get(k) for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")},
                    "retained": r.get("performance_retained", {}).get("accuracy"),
                    "linf": _mean(p, "linf"),
                    "l2": _mean(p, "l2"),
                    "psnr": _mean(p, "psnr_db"),
                    "ssim": _mean(p, "ssim"),
                    "detector_auc": (r.get("detector") or {}).get("auc"),
                    "note": note,
                }
            )
    for c in results.get("controls", {}).get("noise", []):
        rows.append(
            {
                "group": "control",
                "what": f"noise L{c.get('lp')}",
                "eps": _eps_text(c),
                **{k: c.get(k) for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "attack_success_rate")},
                "retained": c.get("performance_retained", {}).get("accuracy"),
                "note": "control",
            }
        )
    return rows


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width text table of :func:`summary_rows`, followed by the validity verdicts.

    Args:
        results: the evaluator's results.

    Returns:
        The table as one string (no trailing newline).

    Example::

        >>> print(format_table(results))
        attack  eps  n  acc  AUC ...
    """
    rows = summary_rows(results)
    cells = [[title for _, title in COLUMNS]] + [[_fmt(r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    checks = results.get("validity", [])
    if checks:
        lines.append("")
        lines.append("validity checks:")
        for c in checks:
            lines.append(f"  [{c['status'].upper():7s}] {c['name']}: {c['message']}")
    return "\n".join(lines)
