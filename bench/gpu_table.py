# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""One summary of a ``bench/gpu.sh`` run: reads the JSON files the run wrote into a folder and writes ``summary.md``
and ``summary.json`` there (wall-clock times: on a GPU the process CPU time says nothing about the work).

Usage::

    python bench/gpu_table.py bench/results/gpu
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ATTACK_RUNS = ("attacks_fp32", "attacks_fp16", "attacks_bf16", "attacks_channels_last_fp16", "attacks_channels_last_bf16")


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _f(v: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec) + suffix


def attacks_table(folder: Path) -> list[str]:
    runs = {name: _load(folder, name) for name in ATTACK_RUNS}
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        return []
    cols = list(runs)
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for name, payload in runs.items():
        for r in payload["results"]:
            rows.setdefault((r["model"], r["attack"]), {})[name] = r
    lines = ["## Attacks (images / wall-second; x floor = wall time / k fp32-or-autocast forward+backward)", "",
             "| model | attack | " + " | ".join(f"ours {c[8:]}" for c in cols) + " | torchattacks fp32 | ART fp32 | "
             + " | ".join(f"ours x floor {c[8:]}" for c in cols) + " |",
             "|---|---|" + "---:|" * (2 * len(cols) + 2)]
    for (model, attack), by in rows.items():
        base = by.get("attacks_fp32", {})
        cells = [_f(by.get(c, {}).get("ours_img_per_s")) for c in cols]
        cells += [_f(base.get("torchattacks_img_per_s")), _f(base.get("art_img_per_s"))]
        cells += [_f(by.get(c, {}).get("ours_x_floor_wall"), ".3f") for c in cols]
        lines.append(f"| {model} | {attack} | " + " | ".join(cells) + " |")
    partial = [c for c, p in runs.items() if p.get("partial")]
    if partial:
        lines += ["", f"Incomplete (the step ran out of time; models done so far): {', '.join(partial)}."]
    return lines + [""]


def evaluation_table(folder: Path) -> list[str]:
    lines: list[str] = []
    for name, title in (("evaluation", "small CNN, 28^2"), ("evaluation_densenet2d", "MONAI DenseNet121-2D, 64^2")):
        p = _load(folder, name)
        if not p:
            continue
        lines += [f"## Evaluator vs a torchattacks loop: {title}", "", "| L-inf eps | torchattacks loop wall s | "
                  "evaluator wall s | speed-up (wall) | evaluator, mixed precision, speed-up (wall) | robust accuracy "
                  "within 1 pt or lower |", "|---|---:|---:|---:|---:|---|"]
        for c in p["comparisons"]:
            sec = c["seconds"]
            lines.append(f"| {', '.join(f'{e * 255:g}/255' for e in c['linf_eps'])} | "
                         f"{sec['plain loop, torchattacks']['wall']:.2f} | {sec['evaluator']['wall']:.2f} | "
                         f"{c['speedup_wall']:.2f}x | {_f(c.get('speedup_wall_mixed_precision'), suffix='x')} | "
                         f"{c['all_within_1pt_or_lower']} |")
        aa = p["settings"].get("autoattack") or {}
        rows = f"; AutoAttack rows: {aa['steps']} iterations, {aa['queries']} Square queries" if aa.get("steps") else ""
        lines += ["", f"n = {p['settings']['n_test']} test images{rows}.", ""]
    return lines


def universal_table(folder: Path) -> list[str]:
    p = _load(folder, "universal")
    if not p:
        return []
    lines = ["## UAP fitting vs ART", "", "| case | tool | wall s | fit rate | test rate | speed-up vs ART (wall) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in p["results"]:
        lines.append(f"| {r['case']} | {r['tool']} | {r['wall_s']:.2f} | {r['fit_rate']:.3f} | {r['test_rate']:.3f} | "
                     f"{_f(r.get('speedup_wall_vs_art'), '.1f')} |")
    return lines + ["", f"Fitted on {p['setup']['num_fit']} training images; measured on the PneumoniaMNIST test split (n = 624).", ""]


def bundles_table(folder: Path) -> list[str]:
    p = _load(folder, "bundles")
    if not p:
        return []
    lines = ["## 2D bundle chain", "", "| chain | wall s | clean acc | PGD-10 2/255 acc | n |", "|---|---:|---:|---:|---:|"]
    for bundle in p["bundles"].values():
        for variant in ("standard", "hardened"):
            if variant not in bundle:
                continue
            r = bundle[variant]
            rep = r["report"]
            pgd = [x for x in rep["attacks"].get("PGD-10", {}).get("results", []) if abs((x.get("eps") or 0) * 255 - 2) < 1e-6]
            lines.append(f"| {' -> '.join(c[:-5] for c in r['configs'])} | {r['wall_s']:.0f} | "
                         f"{rep['clean']['accuracy']:.3f} | {_f(pgd[0].get('accuracy') if pgd else None, '.3f')} | "
                         f"{rep['clean']['n']} |")
    return lines + [""]


def main(folder: str) -> str:
    out = Path(folder)
    steps = json.loads((out / "steps.json").read_text()) if (out / "steps.json").is_file() else []
    lines = ["# bench/gpu.sh", ""]
    if steps:
        lines += ["| step | status | wall s |", "|---|---|---:|"]
        lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} |" for s in steps] + [""]
    for part in (attacks_table, evaluation_table, universal_table, bundles_table):
        try:
            lines += part(out)
        except (KeyError, TypeError, ValueError) as e:  # a step that wrote an unexpected or partial file
            lines += [f"({part.__name__}: could not read the results: {type(e).__name__}: {e})", ""]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps({"steps": steps, "summary_md": text}, indent=2) + "\n")
    return text


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent / "results" / "gpu")))
