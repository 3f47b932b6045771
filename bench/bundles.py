# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The bundles' main jobs at their default settings, timed, and the measured Robustness table of each bundle.

For each bundle it runs, exactly as a user would (``python -m monai.bundle run`` in a subprocess, embedded phantom
data generated on the first run), a *standard* model (``train -> guard -> evaluate``) and a *hardened* one
(``train -> harden -> guard -> evaluate``, the README's main job), each in its own ``bundle_root``. It records
wall and CPU time of every run and writes ``bench/results/bundles.json`` and the ``## Robustness`` section of each
bundle's ``docs/README.md``: clean and robust accuracy, balanced accuracy and AUC with intervals and n, retained on
balanced accuracy, the collapse flag, and the detector guard's AUC beside the 1 - max softmax baseline.

Usage::

    python bench/bundles.py                                 # both bundles, default settings
    python bench/bundles.py --bundles robust_xray_classification --work /tmp/bundles
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:  # python bench/bundles.py, or python -m bench.bundles
    from _common import BENCH_DIR, machine_info, replace_readme_section, write_json
except ImportError:  # pragma: no cover
    from bench._common import BENCH_DIR, machine_info, replace_readme_section, write_json

from monai_robust.metrics.robustness import retained

BUNDLES = BENCH_DIR.parent / "bundles"
# smoke-test overrides (seconds, not a measurement): few images, one epoch each, a guard that a barely trained model can
# be fitted and calibrated with, a 2-step AutoAttack with 5 Square queries
TINY = ["--num_images", "24", "--image_size", "32", "--batch_size", "8", "--num_epochs", "1", "--harden_epochs", "1",
        "--guard_fpr", "0.25", "--guard_eps", "0.25", "--aa_steps", "2", "--aa_queries", "5"]
VARIANTS = {
    "standard": ("train.json", "guard.json", "evaluate.json"),
    "hardened": ("train.json", "harden.json", "guard.json", "evaluate.json"),
}


def run_bundle(bundle: str, configs: tuple[str, ...], root: Path, overrides: list[str], threads: int | None,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs one chain with ``python -m monai.bundle run`` (``threads`` torch threads through ``OMP_NUM_THREADS``;
    ``None``: not set, the bundle's ``num_threads`` decides) in the environment ``env`` (default this process's);
    returns its wall / CPU seconds and the report."""
    files = "[" + ",".join(repr(str(BUNDLES / bundle / "configs" / c)) for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(root), *overrides]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ if env is None else env)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (root / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{bundle} {configs} failed (rc {proc.returncode}); log: {root / 'run.log'}")
    report = json.loads((root / "outputs" / "report" / "robustness.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"configs": list(configs), "wall_s": wall, "cpu_s": cpu, "report": report}


def _ci(r: dict[str, Any], key: str) -> str:
    ci = (r.get("intervals") or {}).get(key)
    return "" if not ci or None in ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Clean and per-attack/ε numbers of a robustness report: accuracy, balanced accuracy and AUC with their 95 %
    intervals and ``n``, retained on balanced accuracy above chance, the collapse flag, and the guard's AUC with its
    numbers of clean / adversarial images and the 1 - max softmax baseline."""
    clean = report["clean"]
    present = clean.get("classes_present") or len(clean.get("per_class") or {}) or 2
    rows = []
    for name, attack in report["attacks"].items():
        for r in attack.get("results", []):
            det = r.get("detector") or {}
            kept = r["performance_retained"].get("balanced_accuracy")
            if kept is None and "balanced_accuracy" in r:
                kept = retained(r, clean, present)["balanced_accuracy"]
            rows.append({
                "attack": name, "eps": r["eps"], "eps_physical": r.get("eps_physical"), "accuracy": r["accuracy"],
                "accuracy_ci": _ci(r, "accuracy"), "balanced_accuracy": r.get("balanced_accuracy"),
                "balanced_accuracy_ci": _ci(r, "balanced_accuracy"), "auc": r["auc"], "auc_ci": _ci(r, "auc"),
                "n": r.get("auc_n", r.get("n")), "retained": kept, "retained_accuracy": r["performance_retained"]["accuracy"],
                "collapsed": bool((r.get("collapse") or {}).get("collapsed")), "detector_auc": det.get("auc"),
                "detector_n": f"{det.get('n_clean')}/{det.get('n_adversarial')}" if det else None,
                "baseline_auc": (det.get("baseline") or {}).get("auc"),
            })
    return {"n": clean["n"], "accuracy": clean["accuracy"], "accuracy_ci": _ci(clean, "accuracy"),
            "balanced_accuracy": clean.get("balanced_accuracy"), "balanced_accuracy_ci": _ci(clean, "balanced_accuracy"),
            "auc": clean["auc"], "auc_ci": _ci(clean, "auc"), "rows": rows,
            "collapsed": bool((clean.get("collapse") or {}).get("collapsed")),
            "validity": {v["name"]: v["status"] for v in report["validity"]}}


def _num(v: Any, ci: str = "") -> str:
    return "n/a" if v is None else f"{v:.3f}{ci}"


def markdown(bundle: str, result: dict[str, Any]) -> str:
    """The bundle README's Robustness section."""
    std, hard = (summarize(result[v]["report"]) for v in ("standard", "hardened"))
    units = result["hardened"]["report"]["meta"]["intensity_map"]["units"]
    lines = [
        f"Measured by `bench/bundles.py` on {result['machine']['date']} ({result['machine']['cpu']}, "
        f"{result['machine']['cpu_count']} cores, {result['threads']} torch thread(s), CPU only) with the default settings on the embedded phantoms "
        f"({std['n']} test images). *Standard*: `train -> guard -> evaluate`; *hardened*: `train -> harden -> guard "
        "-> evaluate` (the README's main job). Robust accuracy under FGSM and PGD-10 (L-inf, eps in model units = "
        f"fraction of the input range; in {units}: the `eps_physical` column), with 95 % intervals in brackets (exact "
        "binomial for accuracy, stratified bootstrap for balanced accuracy and AUC) and the number of test images "
        "behind each AUC; *retained* = (robust - chance) / (clean - chance) of the balanced accuracy (0 for a model "
        "that ignores its input); *collapsed* = one class predicted for >= 90 % of a test set whose largest class is "
        "< 90 %; *guard AUC* = ROC AUC of the bundle's deep-feature detector separating the successful adversarial "
        "images from the clean ones (n clean / adversarial), beside the 1 - max softmax baseline. Synthetic phantoms: a "
        "smoke-test dataset, not clinical evidence.",
        "",
        f"| model | clean acc | clean bal. acc | clean AUC | attack | eps (1/255) | eps ({units}) | robust acc | "
        "robust bal. acc | robust AUC (n) | retained | collapsed | guard AUC (n clean/adv) | 1 - max softmax AUC |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for label, s in (("standard", std), ("hardened", hard)):
        for r in s["rows"]:
            det = "n/a" if r["detector_auc"] is None else f"{r['detector_auc']:.3f} ({r['detector_n']})"
            phys = "" if r["eps_physical"] is None else f"{r['eps_physical']:.3g}"
            lines.append(
                f"| {label} | {_num(s['accuracy'], s['accuracy_ci'])} | "
                f"{_num(s['balanced_accuracy'], s['balanced_accuracy_ci'])} | {_num(s['auc'], s['auc_ci'])} | "
                f"{r['attack']} | {r['eps'] * 255:.0f} | {phys} | {_num(r['accuracy'], r['accuracy_ci'])} | "
                f"{_num(r['balanced_accuracy'], r['balanced_accuracy_ci'])} | {_num(r['auc'], r['auc_ci'])} ({r['n']}) | "
                f"{_num(r['retained'])} | {'yes' if r['collapsed'] else 'no'} | {det} | {_num(r['baseline_auc'])} |"
            )
    lines += ["", "Run time of each chain (each in a fresh bundle_root, embedded data generation included):", "",
              "| chain | wall s | CPU s |", "|---|---:|---:|"]
    for v in VARIANTS:
        lines.append(f"| {' -> '.join(c[:-5] for c in result[v]['configs'])} | {result[v]['wall_s']:.0f} | "
                     f"{result[v]['cpu_s']:.0f} |")
    lines += ["", "Validity checks (hardened): " + ", ".join(f"{k} {v}" for k, v in hard["validity"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=["robust_xray_classification", "robust_ct_classification"])
    p.add_argument("--work", type=Path, default=Path("/tmp/monai_robust_bench_bundles"), help="bundle roots")
    p.add_argument("--override", nargs="*", default=[], help="extra `--key value` pairs for every run")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run (OMP_NUM_THREADS)")
    p.add_argument("--device", default=None, help="the bundles' device (e.g. cuda; default: theirs, cuda when available)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "bundles.json")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (2D bundle settings; not a measurement)")
    args = p.parse_args()
    if args.tiny:
        args.override = TINY + args.override
    if args.device is not None:
        args.override += ["--device", args.device]
    payload: dict[str, Any] = {"machine": machine_info(), "load_avg_1min_at_start": os.getloadavg()[0],
                               "threads": args.threads, "bundles": {}}
    for bundle in args.bundles:
        result: dict[str, Any] = {"machine": payload["machine"], "threads": args.threads}
        for variant, configs in VARIANTS.items():
            root = args.work / bundle / variant
            result[variant] = run_bundle(bundle, configs, root, args.override, args.threads)
            print(f"{bundle} {variant}: wall {result[variant]['wall_s']:.0f} s, CPU {result[variant]['cpu_s']:.0f} s",
                  flush=True)
        payload["bundles"][bundle] = result
        if not args.no_readme:
            replace_readme_section(BUNDLES / bundle / "docs" / "README.md", "Robustness", markdown(bundle, result))
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
