# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The results of a robustness evaluation as rows and as a plain-text table for the console."""

from __future__ import annotations

import math
from typing import Any

from monai_robust.report.verdicts import headline_lines

__all__ = ["COLUMNS", "RETAINED_NOTE", "format_table", "guard_summary", "key_label", "summary_rows"]

COLUMNS = (
    ("what", "attack"),
    ("eps", "eps"),
    ("n", "n"),
    ("accuracy", "acc"),
    ("accuracy_ci", "acc 95% CI"),
    ("balanced_accuracy", "bal.acc"),
    ("balanced_accuracy_ci", "bal.acc 95% CI"),
    ("auc", "AUC"),
    ("auc_ci", "AUC 95% CI"),
    ("auc_n", "AUC n"),
    ("sensitivity", "sens"),
    ("specificity", "spec"),
    ("attack_success_rate", "ASR"),
    ("retained", "retained"),
    ("predicted", "predicted"),
    ("linf", "Linf"),
    ("l2", "L2"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("detector_auc", "det.AUC"),
    ("detector_n", "det. n clean/adv"),
    ("baseline_auc", "1-maxsoftmax AUC"),
    ("note", "note"),
)
"""The summary columns: ``(row key, title)``."""

RETAINED_NOTE = (
    "'retained' = (robust - chance) / (clean - chance) of the balanced accuracy, chance = 1 / classes present: 0 for "
    "a model that ignores its input (e.g. collapsed to one class), 1 when the attack costs nothing, below 0 worse "
    "than chance. Intervals: exact Clopper-Pearson for accuracy, stratified bootstrap for balanced accuracy and AUC; "
    "'AUC n' is the number of images the AUC rests on."
)
"""What the report's ``retained`` and interval columns mean."""


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


def _ci(r: dict[str, Any], name: str) -> str | None:
    ci = (r.get("intervals") or {}).get(name)
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return None
    return f"[{_fmt(float(ci[0]))}, {_fmt(float(ci[1]))}]"


def _quality(r: dict[str, Any], alarm: bool = True) -> dict[str, Any]:
    """The quality columns of one result: rates with their intervals, AUC with its n, the prediction histogram, and
    the collapse, AUC and detector-baseline notes. ``alarm``: a one-class result is the model's collapse (clean
    inputs, random noise), flagged ``COLLAPSED``; otherwise (an attack pushing inputs into one class) it is noted."""
    out = {k: r.get(k) for k in ("n", "accuracy", "balanced_accuracy", "auc", "auc_n", "sensitivity", "specificity",
                                 "attack_success_rate")}
    out.update({f"{k}_ci": _ci(r, k) for k in ("accuracy", "balanced_accuracy", "auc")})
    hist = r.get("prediction_histogram")
    out["predicted"] = " / ".join(f"{k}:{v}" for k, v in hist.items()) if isinstance(hist, dict) else None
    kept = r.get("performance_retained") or {}
    out["retained"] = kept.get("balanced_accuracy")
    det = r.get("detector") or {}
    out["detector_auc"] = det.get("auc")
    if det.get("n_clean") is not None:
        out["detector_n"] = f"{det.get('n_clean')}/{det.get('n_adversarial')}"
    out["baseline_auc"] = (det.get("baseline") or {}).get("auc")
    notes = []
    collapse = r.get("collapse") or {}
    if collapse.get("collapsed"):
        what = str(collapse.get("note", "")).removeprefix("collapsed: ")
        notes.append(("COLLAPSED: " if alarm else "one class under attack: ") + what)
    elif collapse.get("unpredicted_classes"):
        notes.append(collapse.get("note", ""))
    if r.get("auc_note"):
        notes.append(f"AUC: {r['auc_note']}")
    if det.get("verdict") and det["verdict"] != "beats the baseline":
        notes.append(f"detector {det['verdict']}")
    out["notes"] = notes
    return out


def _with_notes(row: dict[str, Any], quality: dict[str, Any], note: str = "") -> dict[str, Any]:
    notes = quality.pop("notes")
    row.update(quality)
    row["note"] = "; ".join(filter(None, [note, *notes]))
    return row


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per clean / attack-and-ε / UAP / control result, with the headline numbers.

    Args:
        results: the evaluator's results (or the JSON read back).

    Returns:
        Rows with the keys of :data:`COLUMNS` and ``"group"``; perturbation sizes are means over the successful
        adversarial examples; ``retained`` is the balanced accuracy retained above chance (:data:`RETAINED_NOTE`);
        ``note`` carries the collapse flag, an AUC's caveat and a detector that does not beat the baseline.

    Example::

        >>> [r["what"] for r in summary_rows(results)][:2]
        ['clean', 'fgsm']
    """
    clean = results.get("clean", {})
    cannot = (clean.get("collapse") or {}).get("balanced_enough") is False
    rows = [_with_notes({"group": "clean", "what": "clean", "eps": "0"}, _quality(clean),
                        clean["collapse"].get("note", "") if cannot else "")]
    for name, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            row: dict[str, Any] = {"group": "attack", "what": name, "eps": _eps_text(r)}
            if r.get("status") != "ok":
                row["note"] = f"{r.get('status', '').upper()}: {r.get('error', '')}"[:80]
                rows.append(row)
                continue
            p = r.get("perceptibility", {})
            row.update(linf=_mean(p, "linf"), l2=_mean(p, "l2"), psnr=_mean(p, "psnr_db"), ssim=_mean(p, "ssim"))
            rows.append(_with_notes(row, _quality(r, alarm=False), "reference" if a.get("reference") else ""))
    for name, u in results.get("uaps", {}).items():
        for part in ("perturbed", "control"):
            r = u.get(part, {})
            p = r.get("perceptibility", {})
            note = f"fooling {_fmt(r.get('fooling_rate'))}"
            if r.get("targeted_success_rate") is not None:
                note += f", targeted {_fmt(r['targeted_success_rate'])}"
            row = {
                "group": "uap",
                "what": f"UAP {name}" + (" (noise control)" if part == "control" else ""),
                "eps": f"{u.get('eps', math.nan):.4g} L{u.get('lp')}",
                "linf": _mean(p, "linf"),
                "l2": _mean(p, "l2"),
                "psnr": _mean(p, "psnr_db"),
                "ssim": _mean(p, "ssim"),
            }
            rows.append(_with_notes(row, _quality(r, alarm=part == "control"), note))
    for c in results.get("controls", {}).get("noise", []):
        row = {"group": "control", "what": f"noise L{c.get('lp')}", "eps": _eps_text(c)}
        rows.append(_with_notes(row, _quality(c), "control"))
    return rows


def guard_summary(results: dict[str, Any]) -> str:
    """One sentence on the calibrated guard's false-positive rate: the target, the calibration size, the range that
    size promises and the rate measured on the clean test images with its interval (``""`` without a guard).

    Example::

        >>> guard_summary(results)
        'guard: target FPR 0.050 from 200 clean calibration images (a guard so calibrated flags 0.024-0.084 of clean
        images, 95 %); measured on 624 clean test images: 0.058 [0.041, 0.079]'
    """
    g = (results.get("detector") or {}).get("guard")
    if not g:
        return ""
    lo, hi = g.get("fpr_range") or [None, None]
    held = g.get("held_out") or {}
    text = (f"guard: target FPR {_fmt(g.get('target_fpr'))} from {g.get('calibration_size')} clean calibration images "
            f"(a guard so calibrated flags {_fmt(lo)}-{_fmt(hi)} of clean images, 95 %)")
    if held.get("n"):
        text += (f"; measured on {held['n']} clean test images: {_fmt(held.get('fpr'))} "
                 f"[{_fmt(held['interval'][0])}, {_fmt(held['interval'][1])}]")
        if not held.get("within_range", True):
            text += " - OUTSIDE the promised range: are the test images from the calibration source?"
    return text


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width text table of :func:`summary_rows`, headed by the standard suite's robust accuracy and the key
    verdicts (:func:`~monai_robust.report.verdicts.headline_lines`), followed by the validity verdicts.

    Args:
        results: the evaluator's results.

    Returns:
        The table as one string (no trailing newline).

    Example::

        >>> print(format_table(results))
        attack  eps  n  acc  AUC ...
    """
    rows = summary_rows(results)
    head = headline_lines(results)
    cells = [[title for _, title in COLUMNS]] + [[_fmt(r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines = [*head, "", *lines]
    lines.append(RETAINED_NOTE)
    if guard_summary(results):
        lines.append(guard_summary(results))
    checks = results.get("validity", [])
    if checks:
        lines.append("")
        lines.append("validity checks:")
        for c in checks:
            lines.append(f"  [{c['status'].upper():7s}] {c['name']}: {c['message']}")
    return "\n".join(lines)
