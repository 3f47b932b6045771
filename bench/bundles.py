# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The bundles' main jobs at their default settings, timed, and the measured Robustness table of each bundle.

For each bundle it runs, exactly as a user would (``python -m monai.bundle run`` in a subprocess, embedded phantom
data generated on the first run), a *standard* model (``train -> guard -> evaluate``) and a *hardened* one
(``train -> harden -> guard -> evaluate``, the README's main job), each in its own ``bundle_root``. It records
wall and CPU time of every run and writes ``bench/results/bundles.json`` and the ``## Robustness`` section of each
bundle's ``docs/README.md``: clean and robust accuracy, balanced accuracy and AUC with intervals and n, retained on
balanced accuracy, the collapse flag, and the detector guard's AUC beside the 1 - max softmax baseline.

With ``--seeds 0 1 2`` every chain runs once per seed (the bundles' ``--seed`` override: it seeds the embedded
phantoms, the weight initialisation and data order, and the attacks' random starts), each in its own
``bundle_root``; the table then gives mean +- sd over the seeds beside the first seed's value and its interval, and
``--metadata`` writes the means into each bundle's ``configs/metadata.json`` ``eval_metrics``. The JSON is rewritten
after every chain, so an interrupted run keeps what finished; ``--from-json`` rewrites the docs from such files
without running anything, merging them (one process per seed, run side by side, each with its own ``--out``).

Usage::

    python bench/bundles.py                                 # both bundles, default settings
    python bench/bundles.py --bundles robust_xray_classification --work /tmp/bundles
    python bench/bundles.py --bundles robust_xray_classification --seeds 0 1 2 --metadata \\
        --override --aa_steps 10 --aa_queries 100            # 3 seeds, a reduced AutoAttack budget
    python bench/bundles.py --from-json /tmp/bundles.json --metadata   # docs from an earlier (partial) run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:  # python bench/bundles.py, or python -m bench.bundles
    from _common import BENCH_DIR, machine_info, replace_readme_section, write_json
except ImportError:  # pragma: no cover
    from bench._common import BENCH_DIR, machine_info, replace_readme_section, write_json

from monai_robust.metrics.intervals import binomial_interval
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


def _ci(r: dict[str, Any], key: str) -> list[float] | None:
    ci = (r.get("intervals") or {}).get(key)
    return None if not ci or None in ci or any(math.isnan(v) for v in ci) else [float(v) for v in ci]


def _wilson(accuracy: float | None, n: int) -> list[float] | None:
    """The 95 % Wilson interval of an accuracy over ``n`` images (the count is ``round(accuracy * n)``)."""
    if accuracy is None or not n:
        return None
    return [float(v) for v in binomial_interval(int(round(accuracy * n)), n, method="wilson")]


def _balanced(r: dict[str, Any]) -> float | None:
    """Balanced accuracy of a report row; for a report written before it was recorded, the mean over classes of the
    per-class recall (``per_class[name]["sensitivity"]``), which is the same number."""
    if r.get("balanced_accuracy") is not None:
        return r["balanced_accuracy"]
    recalls = [c.get("sensitivity") for c in (r.get("per_class") or {}).values()]
    ok = recalls and all(isinstance(v, (int, float)) and math.isfinite(v) for v in recalls)
    return statistics.fmean(recalls) if ok else None


def _row(attack: str, r: dict[str, Any], clean: dict[str, Any], present: int) -> dict[str, Any]:
    det = r.get("detector") or {}
    kept = (r.get("performance_retained") or {}).get("balanced_accuracy")
    if kept is None and r is not clean and _balanced(r) is not None and _balanced(clean) is not None:
        kept = retained({**r, "balanced_accuracy": _balanced(r)}, {**clean, "balanced_accuracy": _balanced(clean)},
                        present)["balanced_accuracy"]
    return {
        "attack": attack, "eps": r.get("eps", 0.0), "eps_physical": r.get("eps_physical"), "n": r.get("n"),
        "accuracy": r["accuracy"], "accuracy_wilson": _wilson(r["accuracy"], int(r.get("n") or 0)),
        "balanced_accuracy": _balanced(r), "balanced_accuracy_ci": _ci(r, "balanced_accuracy"),
        "auc": r.get("auc"), "auc_ci": _ci(r, "auc"), "auc_n": r.get("auc_n", r.get("n")),
        "retained": kept, "retained_accuracy": (r.get("performance_retained") or {}).get("accuracy"),
        "collapsed": bool(r["collapse"].get("collapsed")) if isinstance(r.get("collapse"), dict) else None,
        "prediction_histogram": r.get("prediction_histogram"), "detector_auc": det.get("auc"),
        "detector_n": f"{det.get('n_clean')}/{det.get('n_adversarial')}" if det else None,
        "baseline_auc": (det.get("baseline") or {}).get("auc"),
    }


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """One row per clean set and per attack and ε of a robustness report: accuracy with its 95 % Wilson interval,
    balanced accuracy and AUC with their bootstrap intervals and the AUC's ``n``, retained on balanced accuracy above
    chance, the collapse flag and prediction histogram, and the guard's AUC with its numbers of clean / adversarial
    images beside the 1 - max softmax baseline; and the validity verdicts."""
    clean = report["clean"]
    present = int(clean.get("classes_present") or len(clean.get("per_class") or {}) or 2)
    rows = [_row("clean", clean, clean, present)]
    for name, attack in report["attacks"].items():
        rows += [_row(name, r, clean, present) for r in attack.get("results", [])]
    return {"n": clean["n"], "rows": rows, "validity": {v["name"]: v["status"] for v in report["validity"]}}


def seed_runs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{seed: {variant: run}}`` of one bundle's result: the first seed at the top level, the others under
    ``other_seeds``; a seed may hold only some of the variants (``--variants``, or an interrupted run)."""
    runs = {str(result.get("seeds", [0])[0]): {v: result[v] for v in VARIANTS if v in result}}
    runs.update(result.get("other_seeds", {}))
    return {s: r for s, r in runs.items() if r}


METRICS = ("accuracy", "balanced_accuracy", "auc", "retained", "detector_auc", "baseline_auc")


def aggregate(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per variant, the rows of the first complete seed with, for each metric, its values over every complete seed,
    their mean and sample standard deviation (``None`` with one seed), and the number of seeds flagged collapsed."""
    runs = seed_runs(result)
    out: dict[str, list[dict[str, Any]]] = {}
    for variant in VARIANTS:
        per_seed = {s: summarize(r[variant]["report"])["rows"] for s, r in runs.items() if variant in r}
        first = next(iter(per_seed.values()), [])
        rows = []
        for row in first:
            same = [next((x for x in rs if x["attack"] == row["attack"] and abs(x["eps"] - row["eps"]) < 1e-9), None)
                    for rs in per_seed.values()]
            same = [x for x in same if x is not None]
            stats = {}
            for m in METRICS:
                vals = [x[m] for x in same if isinstance(x[m], (int, float)) and math.isfinite(x[m])]
                stats[m] = {"values": vals, "mean": statistics.fmean(vals) if vals else None,
                            "sd": statistics.stdev(vals) if len(vals) > 1 else None}
            flags = [x["collapsed"] for x in same if x["collapsed"] is not None]
            rows.append({**row, "seeds": len(same), "stats": stats,
                         "collapsed_seeds": f"{sum(flags)}/{len(flags)}" if flags else "n/a"})
        out[variant] = rows
    return out


def _num(v: Any, ci: list[float] | None = None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" + ("" if not ci else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def _cell(row: dict[str, Any], metric: str, ci_key: str | None = None, seeds: int = 1) -> str:
    """``mean ± sd (first seed [interval])`` with several seeds, ``value [interval]`` with one."""
    st = row["stats"][metric]
    first = _num(row[metric], row.get(ci_key) if ci_key else None)
    if seeds < 2:
        return first
    if st["mean"] is None:
        return "n/a"
    return f"{st['mean']:.3f} ± {st['sd']:.3f} ({first})" if ci_key else f"{st['mean']:.3f} ± {st['sd']:.3f}"


def markdown(bundle: str, result: dict[str, Any]) -> str:
    """The bundle README's Robustness section."""
    runs = seed_runs(result)
    agg = aggregate(result)
    by_variant = {v: [s for s, r in runs.items() if v in r] for v in VARIANTS}
    first = {v: runs[ss[0]][v] for v, ss in by_variant.items() if ss}
    report = next(iter(first.values()))["report"]
    units = report["meta"]["intensity_map"]["units"]
    n = report["clean"]["n"]
    seeds = ", ".join(f"{v} {', '.join(ss)}" for v, ss in by_variant.items() if ss)
    overrides = "not recorded (default settings)" if "overrides" not in result else " ".join(result["overrides"]) or "none"
    names = list(report["attacks"])
    aa = "" if "AutoAttack" not in names else (
        " (AutoAttack: APGD-CE, APGD-T, FAB-T, Square, per-image worst case; AutoAttack and Square at the budget the "
        "overrides set, `aa_steps` iterations and `aa_queries` Square queries, else the bundle's standard 100 / 5000)")
    several = any(len(ss) > 1 for ss in by_variant.values())
    lines = [
        f"Measured by `bench/bundles.py` on {result['machine']['date']} ({result['machine']['cpu']}, "
        f"{result['machine']['cpu_count']} cores, {result['threads']} torch thread(s), CPU only) on the embedded phantoms "
        f"({n} test images per seed), seeds: {seeds} (`--seed`: the phantoms, the "
        f"weights' initialisation and data order, the attacks' random starts), overrides: `{overrides}`. *Standard*: "
        "`train -> guard -> evaluate`; *hardened*: `train -> harden -> guard -> evaluate` (the README's main job). "
        f"Attacks: {', '.join(names)}{aa}; L-inf, ε in model units (fraction of the input range; in {units}: the "
        "`eps_physical` column). "
        + ("Each cell: mean ± sample sd over the seeds, then in brackets the first seed's value with its 95 % interval. "
           if several else "Each cell: the value with its 95 % interval. ")
        + "Intervals: Wilson for accuracy, stratified bootstrap for balanced accuracy and AUC; *n* = the images behind "
        "each AUC; *retained* = (robust - chance) / (clean - chance) of the balanced accuracy, chance = 1 / classes "
        "(0 for a model that ignores its input; can fall below 0); *collapsed* = seeds in which one class was "
        "predicted for >= 90 % of a test set whose largest class is < 90 %; *guard AUC* = ROC AUC of the bundle's "
        "deep-feature detector separating the successful adversarial images from the clean ones (first seed's n "
        "clean / adversarial), beside the 1 - max softmax baseline. Synthetic phantoms: a smoke-test dataset, not "
        "clinical evidence."
        + ("" if "balanced_accuracy" in report["clean"] else
           " This report predates the recording of balanced accuracy, its intervals, the AUC's n and the collapse "
           "flag: the table re-reads it, with balanced accuracy as the mean per-class recall (the same number, "
           "without an interval) and collapse n/a."),
        "",
        f"| model | attack | ε (1/255) | ε ({units}) | accuracy | balanced accuracy | AUC | AUC n | retained | "
        "collapsed | guard AUC (n clean/adv) | 1 - max softmax AUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for label in VARIANTS:
        k = len(by_variant[label])
        for r in agg[label]:
            clean = r["attack"] == "clean"
            phys = "" if clean or r["eps_physical"] is None else f"{r['eps_physical']:.3g}"
            eps = "" if clean else f"{r['eps'] * 255:.0f}"
            det = "" if clean else (
                "n/a" if r["detector_auc"] is None else f"{_cell(r, 'detector_auc', seeds=k)} ({r['detector_n']})")
            lines.append(
                f"| {label} | {r['attack']} | {eps} | {phys} | "
                f"{_cell(r, 'accuracy', 'accuracy_wilson', k)} | {_cell(r, 'balanced_accuracy', 'balanced_accuracy_ci', k)} | "
                f"{_cell(r, 'auc', 'auc_ci', k)} | {r['auc_n']} | {'' if clean else _cell(r, 'retained', seeds=k)} | "
                f"{r['collapsed_seeds']} | {det} | {'' if clean else _cell(r, 'baseline_auc', seeds=k)} |"
            )
    sources = [f"{v} seed {s}: {r[v]['source']}" for s, r in runs.items() for v in VARIANTS if r.get(v, {}).get("source")]
    if sources:
        lines += ["", "Not run by this script: " + "; ".join(sources) + "."]
    lines += ["", "Run time of each chain (each in a fresh bundle_root, embedded data generation included), with the "
              "1-minute load average at its start: on a shared, loaded machine these are not timings.", "",
              "| seed | chain | wall s | CPU s | load at start |", "|---|---|---:|---:|---:|"]
    for s, r in runs.items():
        for v in (v for v in VARIANTS if v in r):
            load = r[v].get("load_avg_1min_at_start")
            load_s = "n/a" if load is None else f"{load:.1f}"
            lines.append(f"| {s} | {' -> '.join(c[:-5] for c in r[v]['configs'])} | {r[v]['wall_s']:.0f} | "
                         f"{r[v]['cpu_s']:.0f} | {load_s} |")
    verdicts: dict[str, list[str]] = {}
    for r in (r for r in runs.values() if "hardened" in r):
        for name, status in summarize(r["hardened"]["report"])["validity"].items():
            verdicts.setdefault(name, []).append(status)
    lines += ["", "Validity checks (hardened, per seed): "
              + ", ".join(f"{name} {'/'.join(st)}" for name, st in verdicts.items()) + "."]
    return "\n".join(lines)


EVAL_KEYS = {("AutoAttack", 2): "autoattack", ("PGD-10", 2): "pgd10"}


def eval_metrics(result: dict[str, Any]) -> tuple[dict[str, float], str]:
    """The metadata's ``eval_metrics`` (means over the seeds, with ``_sd`` keys for several seeds) and
    ``eval_metrics_source`` of one bundle's result."""
    agg, runs = aggregate(result), seed_runs(result)
    metrics: dict[str, float] = {}
    for variant, prefix in (("standard", ""), ("hardened", "hardened_")):
        for r in agg[variant]:
            tag = "clean" if r["attack"] == "clean" else EVAL_KEYS.get((r["attack"], round(r["eps"] * 255)))
            if tag is None:
                continue
            for m in ("accuracy", "balanced_accuracy", "auc"):
                key = f"{prefix}clean_{m}" if tag == "clean" else f"{prefix}robust_{m}_{tag}_2_255"
                st = r["stats"][m]
                if st["mean"] is not None:
                    metrics[key] = round(st["mean"], 4)
                    if st["sd"] is not None:
                        metrics[key + "_sd"] = round(st["sd"], 4)
    metrics["n_test"] = next(rows[0]["n"] for rows in agg.values() if rows)
    m = result["machine"]
    source = (
        f"bench/results/bundles.json ({m['date']}, CPU, {result['threads']} torch thread): the bundle's own evaluate.json "
        f"stage on the {metrics['n_test']} test images of the embedded synthetic phantoms, "
        + (f"seed {next(iter(runs))}" if len(runs) == 1 else
           f"mean over the seeds ({'; '.join(f'{v}: ' + ', '.join(s for s, r in runs.items() if v in r) for v in VARIANTS)}"
           "; `--seed`; `_sd` keys: sample standard deviation over them, where a chain has several)")
        + ", overrides "
        f"`{' '.join(result.get('overrides', [])) or 'none'}` (AutoAttack at a reduced budget when aa_steps / aa_queries "
        "are set: the table in docs/README.md says which); keys without a prefix: models/model.pt (train.json); keys "
        "prefixed hardened_: models/model_hardened.pt (harden.json); autoattack = AutoAttack's per-image worst case, "
        "pgd10 = PGD-10, both at 2/255 of the range. docs/README.md's Robustness table gives each seed's intervals "
        "and n"
        + "".join(f"; {v} seed {s} was not run by bench/bundles.py but is {r[v]['source'].split(';')[0]}"
                  for s, r in runs.items() for v in VARIANTS if r.get(v, {}).get("source"))
        + ". Synthetic data: a smoke test, not clinical evidence."
    )
    return metrics, source


def write_metadata(bundle: str, result: dict[str, Any]) -> None:
    """Replaces ``eval_metrics`` and ``eval_metrics_source`` in the bundle's ``configs/metadata.json``."""
    path = BUNDLES / bundle / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["eval_metrics"], meta["eval_metrics_source"] = eval_metrics(result)
    path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")


def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One payload from several (e.g. one process per seed and chain, run side by side): per bundle, every seed's
    chains from the payloads in order (a chain already taken is kept from the first payload that has it), the first
    payload's machine and settings; bundles present in only some payloads are kept."""
    out = {k: v for k, v in payloads[0].items() if k != "bundles"}
    out["bundles"] = {}
    for payload in payloads:
        for bundle, result in payload["bundles"].items():
            runs = seed_runs(result)
            if bundle not in out["bundles"]:
                if not runs:
                    continue
                first, *rest = runs
                out["bundles"][bundle] = {**{k: v for k, v in result.items() if k not in (*VARIANTS, "other_seeds")},
                                          **runs[first], "seeds": [int(first)]}
                runs = {s: runs[s] for s in rest}
            merged = out["bundles"][bundle]
            for seed, run in runs.items():
                if int(seed) == merged["seeds"][0]:
                    home = merged
                else:
                    home = merged.setdefault("other_seeds", {}).setdefault(seed, {})
                    if int(seed) not in merged["seeds"]:
                        merged["seeds"].append(int(seed))
                for variant, chain in run.items():
                    home.setdefault(variant, chain)
    return out


def write_docs(payload: dict[str, Any], readme: bool, metadata: bool) -> None:
    for bundle, result in payload["bundles"].items():
        if not seed_runs(result):
            continue
        if readme:
            replace_readme_section(BUNDLES / bundle / "docs" / "README.md", "Robustness", markdown(bundle, result))
        if metadata:
            write_metadata(bundle, result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=["robust_xray_classification", "robust_ct_classification"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run of each chain per seed (--seed)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="the chains to run")
    p.add_argument("--work", type=Path, default=Path("/tmp/monai_robust_bench_bundles"), help="bundle roots")
    p.add_argument("--override", nargs="*", default=[],
                   help='extra `--key value` pairs for every run, e.g. --override="--aa_steps 10 --aa_queries 100"')
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run (OMP_NUM_THREADS)")
    p.add_argument("--device", default=None, help="the bundles' device (e.g. cuda; default: theirs, cuda when available)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "bundles.json",
                   help="the JSON; the entries of bundles not run here are kept when it exists")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--metadata", action="store_true", help="also write each bundle's metadata.json eval_metrics")
    p.add_argument("--from-json", type=Path, nargs="+", default=None,
                   help="write the docs (and --out) from these JSONs, merged (one per seed run side by side); run nothing")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (2D bundle settings; not a measurement)")
    args = p.parse_args()
    if args.from_json is not None:
        payload = merge([json.loads(path.read_text()) for path in args.from_json])
        write_docs(payload, not args.no_readme, args.metadata)
        write_json(args.out, payload)
        return
    overrides = [tok for item in args.override for tok in shlex.split(item)]
    if args.tiny:
        overrides = TINY + overrides
    if args.device is not None:
        overrides += ["--device", args.device]
    payload: dict[str, Any] = {"bundles": {}}
    if args.out.is_file():
        payload = json.loads(args.out.read_text())
    payload.update({"machine": machine_info(), "load_avg_1min_at_start": os.getloadavg()[0], "threads": args.threads})
    for bundle in args.bundles:
        result: dict[str, Any] = {"machine": payload["machine"], "threads": args.threads, "seeds": args.seeds,
                                  "overrides": overrides}
        payload["bundles"][bundle] = result
        for i, seed in enumerate(args.seeds):  # the seed outermost: an interrupted run keeps whole seeds
            home = result if i == 0 else result.setdefault("other_seeds", {}).setdefault(str(seed), {})
            for variant, configs in ((v, VARIANTS[v]) for v in args.variants):
                root = args.work / bundle / f"seed{seed}" / variant
                load = os.getloadavg()[0]
                home[variant] = run_bundle(bundle, configs, root, [*overrides, "--seed", str(seed)], args.threads)
                home[variant]["load_avg_1min_at_start"] = round(load, 2)
                print(f"{bundle} seed {seed} {variant}: wall {home[variant]['wall_s']:.0f} s, CPU "
                      f"{home[variant]['cpu_s']:.0f} s", flush=True)
                write_json(args.out, payload)
    write_docs(payload, not args.no_readme, args.metadata)
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
