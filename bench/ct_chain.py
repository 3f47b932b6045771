# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The CT bundle's main job (``train -> harden -> guard -> evaluate``), timed stage by stage.

Runs the chain in this process from the bundle's configs (as ``python -m monai.bundle run`` would, embedded phantoms
generated in a fresh ``bundle_root``) and reports, per stage: wall seconds, process-CPU seconds, the 1-minute load
average before and after, and the number of network forward passes (samples) with and without gradients. On a
loaded machine only the CPU seconds and the pass counts mean anything; run it on an idle machine for wall times.

Usage (one torch thread, default settings)::

    python bench/ct_chain.py
    python bench/ct_chain.py --override num_images=80 guard_fpr=0.1 aa_queries=500   # reduced (the validation split
                                                                             # must hold >= 1 / guard_fpr images)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, machine_info, write_json  # noqa: E402

BUNDLE = BENCH_DIR.parent / "bundles" / "robust_ct_classification"
CONFIGS = ("train.json", "harden.json", "guard.json", "evaluate.json")


class PassCounter:
    """Counts forward passes of a network (calls and samples), split by whether autograd records them."""

    def __init__(self) -> None:
        self.counts = {"fwd_calls": 0, "fwd_samples": 0, "grad_fwd_samples": 0}

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        n = int(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) else 0
        self.counts["fwd_calls"] += 1
        self.counts["fwd_samples"] += n
        if torch.is_grad_enabled():
            self.counts["grad_fwd_samples"] += n

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def _cpu() -> float:
    return time.process_time()


def _parse_override(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_chain(root: Path, overrides: dict[str, Any], only: list[str] | None = None) -> list[dict[str, Any]]:
    """Runs the chain in ``root`` (only the stages named in ``only``: then the hardened checkpoint already in ``root``
    is loaded first, so that e.g. the guard stage can be timed again on the same model); returns one row per stage."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in CONFIGS])
    parser["bundle_root"] = str(root)
    for k, v in overrides.items():
        parser[k] = v
    rows: list[dict[str, Any]] = []
    counter = PassCounter()

    def timed(name: str, fn: Any) -> Any:
        c0, w0, l0, p0 = _cpu(), time.perf_counter(), os.getloadavg()[0], counter.snapshot()
        out = fn()
        p1 = counter.snapshot()
        rows.append({
            "stage": name, "wall_s": time.perf_counter() - w0, "cpu_s": _cpu() - c0,
            "load_before": l0, "load_after": os.getloadavg()[0], **{k: p1[k] - p0[k] for k in p1},
        })
        print(f"{name}: wall {rows[-1]['wall_s']:.1f} s, CPU {rows[-1]['cpu_s']:.1f} s, "
              f"forward samples {rows[-1]['fwd_samples']} ({rows[-1]['grad_fwd_samples']} with grad)", flush=True)
        return out

    timed("setup", lambda: [parser.get_parsed_content(f"initialize#{i}") for i in range(2)])
    network = timed("build", lambda: parser.get_parsed_content("network"))
    stages = parser.get_parsed_content("stages")
    names = ["train", "harden", "guard"][: len(stages)]
    if only and "train" not in only:  # later stages alone: on the checkpoint an earlier run left in root
        state = torch.load(parser.get_parsed_content("ckpt_file"), map_location="cpu", weights_only=True)
        network.load_state_dict(state.get("model", state))
    network.register_forward_pre_hook(counter.hook)
    for name, stage in zip(names, stages):
        if not only or name in only:
            timed(name, stage)
    if not only or "evaluate" in only:
        evaluator = parser.get_parsed_content("evaluate#evaluator")
        timed("evaluate", evaluator.run)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="bundle_root (default: a fresh temporary folder)")
    p.add_argument("--override", nargs="*", default=[], help="config overrides key=value (JSON values)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--only", nargs="*", default=None, choices=["train", "harden", "guard", "evaluate"],
                   help="time only these stages, on the hardened checkpoint already in --root")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "ct_chain.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("monai_robust").setLevel(logging.INFO)  # the guard's ladder: images broken at each budget
    overrides = _parse_override(args.override)
    root = args.root or Path(tempfile.mkdtemp(prefix="ct_chain_"))
    rows = run_chain(root, overrides, args.only)
    total = {k: sum(r[k] for r in rows) for k in ("wall_s", "cpu_s", "fwd_samples", "grad_fwd_samples")}
    print(f"total: wall {total['wall_s']:.1f} s, CPU {total['cpu_s']:.1f} s", flush=True)
    write_json(args.out, {"machine": machine_info(), "threads": args.threads, "overrides": overrides,
                          "default_settings": not overrides, "only": args.only, "stages": rows, "total": total})


if __name__ == "__main__":
    main()
