# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Run-to-run variation of the hardening tutorial: ``tutorials/harden_pneumoniamnist.py --seed S`` for several S,
summarized row by row (mean ± sd over seeds) in one JSON and one Markdown table.

Each seed chooses its own denoising block on the validation split, so the rows are matched by role (``standard``,
``blocks only``, ``adversarial training only``, ``blocks + adversarial training``) and the block each seed chose is
listed. Numbers: clean accuracy, balanced accuracy and AUC (n = the test split), worst-case robust accuracy and
worst-case balanced accuracy per ε, and balanced accuracy retained above chance against the standard model of the
same seed.

Usage::

    python bench/harden_seeds.py bench/results/harden_seeds.json bench/results/harden.json \\
        bench/results/harden_seed1.json bench/results/harden_seed2.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_summary import summarize  # noqa: E402

from monai_robust.metrics.robustness import performance_retained  # noqa: E402

ROLES = ("standard", "blocks only", "adversarial training only", "blocks + adversarial training")


def role(name: str) -> str:
    """A row's role: its name without the chosen block, e.g. ``blocks (topk) + adversarial training`` ->
    ``blocks + adversarial training``."""
    return re.sub(r" \([^)]*\)", "", name)


def _retained(robust: float, clean: float) -> float | None:
    """Balanced accuracy retained above chance (two classes): the library's definition; None below chance."""
    return performance_retained(robust, clean, chance=0.5) if clean > 0.5 else None


def normalize(run: dict[str, Any]) -> dict[str, Any]:
    """The per-seed numbers the summary keeps, rows keyed by role."""
    rows = {role(k): v for k, v in run["rows"].items()}
    standard_bal = rows["standard"]["clean_balanced_accuracy"]
    out: dict[str, Any] = {}
    for name in ROLES:
        r = rows[name]
        out[name] = {
            "clean_accuracy": r["clean_accuracy"], "clean_balanced_accuracy": r["clean_balanced_accuracy"],
            "clean_auc": r["clean_auc"],
            "worst_case": {e: v["worst_case"] for e, v in r["robust"].items()},
            "worst_case_balanced_accuracy": r["worst_case_balanced_accuracy"],
            "retained_balanced": {e: _retained(v, standard_bal) for e, v in r["worst_case_balanced_accuracy"].items()},
        }
    return out


def _ms(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    return f"{cell['mean']:.3f} ± {cell['sd']:.3f}" if cell.get("sd") is not None else f"{cell['mean']:.3f}"


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    eps = list(next(iter(summary.values()))["worst_case"])
    lines = ["| model | clean acc | clean bal. acc | clean AUC | " + " | ".join(f"worst {e}" for e in eps)
             + " | " + " | ".join(f"worst bal. acc {e}" for e in eps) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(eps))]
    for name in ROLES:
        s = summary[name]
        lines.append(f"| {name} | {_ms(s['clean_accuracy'])} | {_ms(s['clean_balanced_accuracy'])} | "
                     f"{_ms(s['clean_auc'])} | " + " | ".join(_ms(s["worst_case"][e]) for e in eps) + " | "
                     + " | ".join(_ms(s["worst_case_balanced_accuracy"][e]) for e in eps) + " |")
    blocks = [r["block_selection_on_val"]["chosen"] for r in runs]
    seconds = [r["total_seconds"] for r in runs]
    lines += ["", f"{len(runs)} seeds ({', '.join(str(r['config'].get('seed', 0)) for r in runs)}), n = "
              f"{runs[0]['config']['n_test']} test images each; mean ± sample sd over seeds. Blocks chosen on the "
              f"validation split: {', '.join(blocks)}. Run time {min(seconds):.0f}-{max(seconds):.0f} s per seed "
              f"(mean {statistics.fmean(seconds):.0f} s)."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the summary JSON to write")
    p.add_argument("inputs", type=Path, nargs="+", help="one harden JSON per seed")
    args = p.parse_args()
    runs = [json.loads(path.read_text()) for path in args.inputs]
    per_seed = [normalize(r) for r in runs]
    summary = summarize(per_seed)
    payload = {"sources": [str(p) for p in args.inputs], "runs": len(runs),
               "seeds": [r["config"].get("seed", 0) for r in runs],
               "blocks_chosen": [r["block_selection_on_val"]["chosen"] for r in runs],
               "note": "per number: its values in the order of 'sources', mean, sample sd, min, max; rows by role",
               "summary": summary}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown(summary, runs))


if __name__ == "__main__":
    main()
