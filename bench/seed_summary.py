# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Run-to-run variation of an evidence JSON: the same script run with several ``--seed`` values, summarized.

Walks the JSON files (one per seed, same structure) in parallel and writes, for every number that all of them hold
at the same place (booleans excluded), its values in seed order, mean, sample standard deviation, minimum and
maximum, in a tree of the same shape. The tutorials' README quotes ``mean ± sd`` from it.

Usage::

    python bench/seed_summary.py bench/results/detectors_seeds.json /tmp/det/seed0.json /tmp/det/seed1.json ...
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summarize(trees: list[Any]) -> Any:
    """The summary tree of ``trees`` (parsed JSON values of the same shape): dicts by their common keys, lists of
    equal length by position, numbers as ``{"values", "mean", "sd", "min", "max"}``; anything else is dropped
    (``None``)."""
    if all(_is_number(t) for t in trees):
        vals = [float(t) for t in trees]
        return {"values": vals, "mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals), "max": max(vals)}
    if all(isinstance(t, dict) for t in trees):
        keys = [k for k in trees[0] if all(k in t for t in trees[1:])]
        out = {k: summarize([t[k] for t in trees]) for k in keys}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []} or None
    if all(isinstance(t, list) for t in trees) and len({len(t) for t in trees}) == 1:
        out_list = [summarize(list(items)) for items in zip(*trees)]
        return out_list if any(v is not None for v in out_list) else None
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the summary JSON to write")
    p.add_argument("inputs", type=Path, nargs="+", help="one JSON per seed")
    args = p.parse_args()
    trees = []
    for path in args.inputs:
        try:
            trees.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"cannot read the evidence JSON {path}: {err}") from err
    payload = {"sources": [str(p) for p in args.inputs], "runs": len(trees),
               "note": "per number: its values in the order of 'sources', mean, sample sd, min, max",
               "summary": summarize(trees)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out} ({len(trees)} runs)")


if __name__ == "__main__":
    main()
