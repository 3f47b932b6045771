# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The README's main job on an idle machine and under a synthetic load of busy processes: does it collapse when the
cores are oversubscribed, and which thread setting prevents it?

The job is the README's first command: ``python -m monai.bundle run`` of the 2D bundle's ``train -> harden -> guard
-> evaluate`` chain at its default settings, each run in a fresh ``bundle_root`` (phantom generation included). It
runs once per *variant* and *condition*:

* variants: ``torch-default`` (as before the fix: one thread per available core, OpenMP's default spin-waiting),
  ``load-aware`` (the bundles' default ``num_threads=0``: :func:`monai_robust.utils.threads.default_num_threads`,
  one thread when the load average says the cores are busy), ``passive`` (one thread per core with
  ``OMP_WAIT_POLICY=PASSIVE``, :func:`~monai_robust.utils.threads.passive_openmp_env`), ``one-thread``;
* conditions: ``idle`` and ``busy`` (``--busy`` pure-Python busy loops started before the run, and the load average
  given ``--settle`` seconds to rise, then stopped after it).

Target (issue 19): under 4 busy processes on 2 cores, within 4x the idle wall time. The machine must be otherwise
idle for the numbers to mean anything (the JSON records the load average before every run). ``--tiny`` (24 images,
1 + 1 epochs, 1 busy process, no settling) is a smoke test of the script, not a measurement.

Usage::

    python bench/oversubscription.py                      # all variants, idle and under 4 busy processes
    python bench/oversubscription.py --variants torch-default load-aware --busy 4
    python bench/oversubscription.py --tiny --out /tmp/o.json --no-readme   # seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, machine_info, replace_readme_section, write_json  # noqa: E402

from bundles import TINY, VARIANTS, run_bundle  # noqa: E402
from monai_robust.utils.threads import available_cores, passive_openmp_env  # noqa: E402

BUNDLE = "robust_xray_classification"
TARGET = 4.0  # busy wall time / idle wall time


def variant_settings(variant: str) -> tuple[list[str], dict[str, str]]:
    """The bundle overrides and the environment of one variant."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    cores = str(available_cores())
    if variant == "torch-default":
        return ["--num_threads", cores], env
    if variant == "load-aware":
        return ["--num_threads", "0"], env
    if variant == "passive":
        passive_openmp_env(env)
        return ["--num_threads", cores], env
    if variant == "one-thread":
        return ["--num_threads", "1"], env
    raise ValueError(f"unknown variant {variant!r}")


VARIANT_NAMES = ("torch-default", "load-aware", "passive", "one-thread")


class BusyLoad:
    """``n`` child processes that spin in pure Python (the synthetic load), started on entry and stopped on exit."""

    def __init__(self, n: int, settle_s: float) -> None:
        self.n, self.settle_s, self.procs = n, settle_s, []

    def __enter__(self) -> BusyLoad:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(self.settle_s)  # the 1-minute load average needs time to show the load
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def wait_until_idle(threshold: float = 0.8, max_s: float = 300.0) -> float:
    """Waits (at most ``max_s`` seconds) until the 1-minute load average is below ``threshold``: after a busy run it
    lags by minutes, and the load-aware thread default of the next idle run would read it. Returns seconds waited."""
    t0 = time.perf_counter()
    while os.getloadavg()[0] >= threshold and time.perf_counter() - t0 < max_s:
        time.sleep(5)
    return time.perf_counter() - t0


def run(variant: str, condition: str, work: Path, overrides: list[str], busy: int, settle: float) -> dict[str, Any]:
    extra, env = variant_settings(variant)
    waited = wait_until_idle() if condition == "idle" else 0.0
    root = work / f"{variant}-{condition}"
    load = BusyLoad(busy if condition == "busy" else 0, settle if condition == "busy" else 0.0)
    with load:
        before = os.getloadavg()[0]
        out = run_bundle(BUNDLE, VARIANTS["hardened"], root, [*overrides, *extra], None, env)
    report = out.pop("report")
    row = {"variant": variant, "condition": condition, "busy_processes": load.n, "load_avg_1min_before": before,
           "overrides": extra, "omp_wait_policy": env.get("OMP_WAIT_POLICY"), "waited_for_idle_s": round(waited, 1), **out,
           "clean_accuracy": report["clean"]["accuracy"]}
    print(f"{variant:14s} {condition:5s} wall {row['wall_s']:7.1f} s  CPU {row['cpu_s']:7.1f} s  "
          f"(load before {before:.1f})", flush=True)
    return row


def markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [f"`python bench/oversubscription.py` ({m['date']}; {m['cpu']}, {payload['available_cores']} available "
             f"core(s); torch {m['torch']}). The README's main job (`{BUNDLE}`: train -> harden -> guard -> evaluate, "
             f"default settings, fresh bundle_root) idle and under {payload['busy']} busy processes (pure-Python "
             f"loops); target: busy wall <= {TARGET:g}x idle wall."
             + (" **--tiny: a smoke test, not a measurement.**" if payload["tiny"] else ""), "",
             "| variant | idle wall s | busy wall s | busy / idle | idle CPU s | busy CPU s | target |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for v in payload["variants"]:
        r = {row["condition"]: row for row in payload["runs"] if row["variant"] == v}
        if set(r) != {"idle", "busy"}:
            continue
        ratio = r["busy"]["wall_s"] / r["idle"]["wall_s"]
        lines.append(f"| {v} | {r['idle']['wall_s']:.0f} | {r['busy']['wall_s']:.0f} | {ratio:.2f}x | "
                     f"{r['idle']['cpu_s']:.0f} | {r['busy']['cpu_s']:.0f} | {'met' if ratio <= TARGET else 'MISSED'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=VARIANT_NAMES, default=list(VARIANT_NAMES))
    p.add_argument("--busy", type=int, default=None, help="busy processes of the loaded condition (default 4)")
    p.add_argument("--settle", type=float, default=None, help="seconds between starting the load and the run (60)")
    p.add_argument("--work", type=Path, default=Path("/tmp/monai_robust_bench_oversubscription"))
    p.add_argument("--override", nargs="*", default=[], help="extra bundle overrides, e.g. num_epochs=1 (key=value)")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds), not a measurement")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "oversubscription.json")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    busy = args.busy if args.busy is not None else (1 if args.tiny else 4)
    settle = args.settle if args.settle is not None else (0.0 if args.tiny else 60.0)
    overrides = (TINY if args.tiny else []) + [t for kv in args.override for t in (f"--{kv.split('=', 1)[0]}",
                                                                                  kv.split("=", 1)[1])]
    payload: dict[str, Any] = {"machine": machine_info(), "available_cores": available_cores(), "busy": busy,
                               "settle_s": settle, "tiny": args.tiny, "overrides": overrides,
                               "variants": args.variants, "runs": []}
    for variant in args.variants:  # idle first, then busy, per variant
        for condition in ("idle", "busy"):
            payload["runs"].append(run(variant, condition, args.work, overrides, busy, settle))
            write_json(args.out, payload)  # after every run: an interrupted benchmark keeps what it measured
    if not args.no_readme:
        replace_readme_section(BENCH_DIR / "README.md", "Oversubscription", markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
