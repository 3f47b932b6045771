# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""A self-contained HTML page (one file plus its PNGs beside it) for a robustness evaluation."""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_robust.report.table import COLUMNS, RETAINED_NOTE, _fmt, guard_summary, summary_rows
from monai_robust.report.verdicts import (
    STANDARD_SUITE,
    budget_verdicts,
    key_verdicts,
    standard_suite_rows,
    success_by_step_rows,
)

__all__ = ["render_html"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.pass{background:#d9f2d9}.fail{background:#f8d0d0}.warn{background:#fbeec2}.skipped{background:#eee}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:10em}
.card b{font-size:1.5em;display:block}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.note{color:#666;font-size:.85em}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _cards(results: dict[str, Any]) -> str:
    clean = results.get("clean", {})
    cards = [("clean accuracy", clean.get("accuracy")), ("clean balanced accuracy", clean.get("balanced_accuracy")),
             (f"clean ROC AUC (n={_fmt(clean.get('auc_n', clean.get('n')))})", clean.get("auc"))]
    worst: dict[str, tuple[float, str]] = {}
    for name, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            acc = r.get("accuracy")
            if r.get("status") == "ok" and isinstance(acc, float) and math.isfinite(acc) and r.get("eps") is not None:
                k = f"L{a.get('lp')} ε={r['eps']:.4g}"
                if k not in worst or acc < worst[k][0]:
                    worst[k] = (acc, name)
    for k in sorted(worst)[:6]:
        cards.append((f"worst-case robust accuracy, {k} ({worst[k][1]})", worst[k][0]))
    checks = results.get("validity", [])
    fails = sum(c["status"] == "fail" for c in checks)
    parts = [f'<div class="card">{_esc(t)}<b>{_fmt(v)}</b></div>' for t, v in cards]
    collapsed = [r["what"] + " " + str(r["eps"]) for r in summary_rows(results) if "COLLAPSED" in str(r.get("note", ""))]
    if collapsed:
        parts.append(f'<div class="card fail">collapsed to one class<b>{len(collapsed)}</b>{_esc(", ".join(collapsed[:4]))}</div>')
    parts.append(
        f'<div class="card {"fail" if fails else "pass"}">validity checks<b>{len(checks) - fails}/{len(checks)} ok</b>'
        "</div>"
    )
    return '<div class="cards">' + "".join(parts) + "</div>"


def _headline(results: dict[str, Any]) -> str:
    """The standard suite's robust accuracy, the key verdicts (gradient masking, convergence) and the per-step
    success of the minimisation attacks, above every other number."""
    suite = standard_suite_rows(results)
    if suite:
        cells = "".join(
            f"<tr><td class='l'>{_esc(r['attack'])}</td><td>L{_esc(r['lp'])}</td><td>{_fmt(r['eps'])}</td>"
            f"<td>{_fmt(r['n'])}</td><td>{_fmt(r['accuracy'])}</td></tr>" for r in suite
        )
        parts = [f"<p>Standard suite: <b>{STANDARD_SUITE}</b> (APGD-CE, APGD-T, FAB-T, Square; per-sample worst case). "
                 "Quote these robust accuracies; FGSM and PGD are kept for the ε curves.</p>"
                 "<table><tr><th class='l'>attack</th><th>norm</th><th>ε</th><th>n</th><th>robust accuracy</th></tr>"
                 f"{cells}</table>"]
        parts += [f"<p class='{'pass' if v['standard'] else 'fail'}'>{_esc(v['text'])}</p>" for v in budget_verdicts(results)]
    else:
        parts = [f"<p class='fail'>The standard suite ({STANDARD_SUITE}) was not run: robust accuracies from FGSM/PGD "
                 "alone may overstate robustness.</p>"]
    for c in key_verdicts(results):
        parts.append(f"<p class='{_esc(c['status'])}'><b>{_esc(c['status'].upper())}</b> {_esc(c['name'])}: "
                     f"{_esc(c['message'])}</p>")
    steps = success_by_step_rows(results)
    if steps:
        width = max(len(s) for _, s in steps)
        head = "".join(f"<th>{i + 1}</th>" for i in range(width))
        body = "".join(
            f"<tr><td class='l'>{_esc(n)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in s) + "</tr>" for n, s in steps
        )
        parts.append("<p>Success of the minimisation attacks after each search step (fraction of attacked samples "
                     f"with an adversarial found):</p><table><tr><th class='l'>attack</th>{head}</tr>{body}</table>")
    return "".join(parts)


def _summary_table(results: dict[str, Any]) -> str:
    titles = {"eps": "ε (physical)", "accuracy": "accuracy", "accuracy_ci": "accuracy 95 % CI",
              "balanced_accuracy": "balanced accuracy", "balanced_accuracy_ci": "bal. acc. 95 % CI", "auc": "ROC AUC",
              "auc_ci": "AUC 95 % CI", "auc_n": "AUC n", "sensitivity": "sensitivity", "specificity": "specificity",
              "attack_success_rate": "success rate", "predicted": "predicted (per class)", "linf": "mean L∞",
              "l2": "mean L2", "psnr": "PSNR dB", "ssim": "SSIM", "detector_auc": "detector AUC",
              "detector_n": "detector n clean/adv", "baseline_auc": "1 − max softmax AUC"}
    cols = [(k, titles.get(k, t)) for k, t in COLUMNS]
    head = "".join(f'<th class="{"l" if k in ("what", "note") else ""}">{_esc(t)}</th>' for k, t in cols)
    body = []
    for r in summary_rows(results):
        cells = "".join(f'<td class="{"l" if k in ("what", "note") else ""}">{_esc(_fmt(r.get(k)))}</td>' for k, _ in cols)
        flag = ' class="fail"' if "COLLAPSED" in str(r.get("note", "")) else ""
        body.append(f"<tr{flag}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _per_class_table(results: dict[str, Any]) -> str:
    clean = results.get("clean", {}).get("per_class", {})
    if not clean:
        return ""
    head = "<tr><th class='l'>result</th><th class='l'>class</th><th>n</th><th>ROC AUC</th><th>sensitivity</th><th>specificity</th></tr>"
    rows = []

    def add(label: str, per_class: dict[str, Any]) -> None:
        for cname, m in per_class.items():
            rows.append(
                f"<tr><td class='l'>{_esc(label)}</td><td class='l'>{_esc(cname)}</td><td>{_fmt(m.get('n'))}</td>"
                f"<td>{_fmt(m.get('auc'))}</td><td>{_fmt(m.get('sensitivity'))}</td><td>{_fmt(m.get('specificity'))}</td></tr>"
            )

    add("clean", clean)
    for name, a in results.get("attacks", {}).items():
        ok = [r for r in a.get("results", []) if r.get("status") == "ok"]
        if ok:
            r = ok[-1]
            add(f"{name} ε={'inf' if r['eps'] is None else format(r['eps'], '.4g')}", r.get("per_class", {}))
    return f"<table>{head}{''.join(rows)}</table>"


def _validity_table(results: dict[str, Any]) -> str:
    rows = []
    for c in results.get("validity", []):
        rows.append(
            f"<tr class='{_esc(c['status'])}'><td class='l'><b>{_esc(c['status'].upper())}</b></td>"
            f"<td class='l'>{_esc(c['name'])}</td><td class='l'>{_esc(c['message'])}</td>"
            f"<td class='l note'>{_esc(c.get('reference', ''))}</td></tr>"
        )
    if not rows:
        return "<p>No validity checks were run.</p>"
    return "<table><tr><th class='l'>verdict</th><th class='l'>check</th><th class='l'>finding</th><th class='l'>reference</th></tr>" + "".join(rows) + "</table>"


def _uap_table(results: dict[str, Any]) -> str:
    uaps = results.get("uaps", {})
    if not uaps:
        return ""
    rows = []
    for name, u in uaps.items():
        for part in ("perturbed", "control"):
            r = u.get(part, {})
            per = ", ".join(f"{k}: {_fmt(v)}" for k, v in r.get("per_class_fooling_rate", {}).items())
            rows.append(
                f"<tr><td class='l'>{_esc(name)}{' (random control)' if part == 'control' else ''}</td>"
                f"<td>{_fmt(u.get('eps'))} L{_esc(u.get('lp'))}</td><td>{_fmt(r.get('fooling_rate'))}</td>"
                f"<td>{_fmt(r.get('targeted_success_rate'))}</td><td class='l'>{_esc(per)}</td><td>{_fmt(r.get('accuracy'))}</td></tr>"
            )
    return (
        "<h2>Universal perturbations</h2><table><tr><th class='l'>perturbation</th><th>budget</th><th>fooling rate</th>"
        "<th>targeted success</th><th class='l'>fooling rate per class</th><th>accuracy</th></tr>" + "".join(rows) + "</table>"
    )


def render_html(
    results: dict[str, Any],
    path: str | os.PathLike,
    figures: dict[str, Any] | None = None,
    examples: Sequence[tuple[str, Path]] = (),
    title: str = "Robustness report",
) -> Path:
    """Writes the HTML report: headline cards, robust (balanced) accuracy and AUC plots, the summary table, per-class numbers,
    validity verdicts, example panels, detector histograms, UAPs, errors and the run's settings.

    Args:
        results: the evaluator's results.
        path: the HTML file to write; figure paths are written relative to its folder.
        figures: ``{"accuracy": png, "balanced_accuracy": png, "auc": png, "detector": png}`` (any may be missing).
        examples: ``(caption, png)`` example panels.
        title: the page title.

    Returns:
        The path written.

    Example::

        >>> render_html(results, "report/index.html", {"accuracy": Path("report/accuracy_vs_eps.png")})
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = figures or {}

    def img(p: Any, alt: str) -> str:
        if not p:
            return ""
        rel = os.path.relpath(Path(p), path.parent)
        return f'<img src="{_esc(rel)}" alt="{_esc(alt)}">'

    meta = results.get("meta", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"]
    parts.append(f"<h1>{_esc(title)}</h1>")
    parts.append(
        f"<p class='note'>{_esc(meta.get('network', ''))} on {_fmt(meta.get('n'))} images, device {_esc(meta.get('device', ''))}, "
        f"{_fmt(meta.get('wall_time_s'))} s. {'Incomplete run. ' if meta.get('complete') is False else ''}</p>"
    )
    parts.append(_cards(results))
    parts.append("<h2>Headline: standard suite and key verdicts</h2>" + _headline(results))
    parts.append("<h2>Robustness vs budget</h2>")
    parts.append(img(figures.get("accuracy"), "robust accuracy vs eps")
                 + img(figures.get("balanced_accuracy"), "robust balanced accuracy vs eps")
                 + img(figures.get("auc"), "robust AUC vs eps"))
    parts.append("<h2>Validity checks</h2>" + _validity_table(results))
    parts.append("<h2>All numbers</h2>" + _summary_table(results))
    parts.append(
        "<p class='note'>Perturbation sizes, PSNR and SSIM are means over successful adversarial examples. "
        + _esc(RETAINED_NOTE) + " " + _esc(meta.get("auc_note", "")) + "</p>"
    )
    parts.append("<h2>Per class</h2>" + _per_class_table(results))
    if examples:
        parts.append("<h2>Examples</h2>")
        for caption, p in examples:
            parts.append(f"<h3>{_esc(caption)}</h3>" + img(p, caption))
    if figures.get("detector") or guard_summary(results):
        parts.append("<h2>Detector</h2>" + img(figures.get("detector"), "detector score histograms"))
        parts.append(f"<p>{_esc(guard_summary(results))}</p>" if guard_summary(results) else "")
        parts.append("<p class='note'>Detector AUCs separate the successful adversarial images from the clean ones "
                     "(n clean / adversarial in the table), beside the 1 − max softmax baseline; the note column says "
                     "where a detector does not beat it.</p>")
    parts.append(_uap_table(results))
    errors = results.get("errors", [])
    if errors:
        parts.append("<h2>Errors</h2><ul>" + "".join(f"<li><b>{_esc(e['where'])}</b>: {_esc(e['error'])}</li>" for e in errors) + "</ul>")
    settings = {k: v for k, v in meta.items() if k not in ("auc_note",)}
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><td class='l'>{_esc(k)}</td><td class='l'>{_esc(v)}</td></tr>" for k, v in settings.items()
    ))
    parts.append("".join(
        f"<tr><td class='l'>attack {_esc(n)}</td><td class='l'>{_esc(a.get('attack'))}</td></tr>"
        for n, a in results.get("attacks", {}).items()
    ) + "</table></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
