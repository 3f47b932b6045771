# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Time of one training epoch on MONAI's ``SupervisedTrainer``: standard, PGD-k AT, TRADES (k inner steps) and fast AT,
on the same model and data (PneumoniaMNIST training images), in one process, interleaved, minimum over repeats.

Targets (issue 5): PGD-k AT <= 1.1 x (k + 1) x standard; fast AT <= 2.2 x standard. A PGD-k epoch cannot cost less
than about (k + 1) standard epochs (k forward+backward passes to craft, one to train), fast AT about 2.

Writes ``bench/results/training.json`` and the ``## Training`` section of ``bench/README.md``.

Usage::

    python bench/training.py [--data ../shared/data/pneumoniamnist.npz] [--n 1024] [--k 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:  # python bench/training.py, or python -m bench.training
    from _common import BENCH_DIR, machine_info, replace_readme_section, write_json
except ImportError:  # pragma: no cover
    from bench._common import BENCH_DIR, machine_info, replace_readme_section, write_json

from monai_robust.attacks.pgd import PGD
from monai_robust.data import medmnist_tensors
from monai_robust.engines.training import FastATIteration, PGDATIteration, TRADESIteration
from monai_robust.networks import SmallCNN

BOUNDS = (0.0, 1.0)
EPS = 2 / 255


def _iteration(method: str, net: nn.Module, k: int) -> Any:
    if method == "standard":
        return None
    if method == f"PGD-{k} AT":
        return PGDATIteration(PGD(net, EPS, num_steps=k, bounds=BOUNDS))
    if method == f"TRADES-{k}":
        return TRADESIteration(PGD(net, EPS, num_steps=k, bounds=BOUNDS), beta=6.0)
    if method == "fast AT":
        return FastATIteration(net, EPS, bounds=BOUNDS)
    if method == "fast AT (clean_metrics=False)":
        return FastATIteration(net, EPS, bounds=BOUNDS, clean_metrics=False)
    raise ValueError(method)


def _epoch(method: str, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int) -> SupervisedTrainer:
    torch.manual_seed(0)
    net = SmallCNN()  # the model of the hardening tutorial: conv-BN-ReLU, channels 16, 32, 64
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    iteration = _iteration(method, net, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SupervisedTrainer("cpu", 1, loader, net, torch.optim.Adam(net.parameters(), 1e-3), nn.CrossEntropyLoss(),
                                 iteration_update=iteration, train_handlers=[iteration] if iteration else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=BENCH_DIR.parents[1] / "shared" / "data" / "pneumoniamnist.npz")
    parser.add_argument("--n", type=int, default=1024, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=10, help="PGD / TRADES inner steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    x, y = medmnist_tensors(args.data, "train", limit=args.n)
    k = args.k
    methods = ["standard", f"PGD-{k} AT", f"TRADES-{k}", "fast AT", "fast AT (clean_metrics=False)"]
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}  # (wall, CPU) seconds per epoch
    for r in range(args.repeats):
        for m in methods:  # interleaved, so that every method sees the same load
            trainer = _epoch(m, x, y, k, args.batch_size)
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.run()
            runs[m].append((time.perf_counter() - wall, time.process_time() - cpu))
        print(f"repeat {r + 1}: " + ", ".join(f"{m} {runs[m][-1][0]:.2f}s" for m in methods))
    wall = {m: min(w for w, _ in runs[m]) for m in methods}
    cpu = {m: min(c for _, c in runs[m]) for m in methods}
    ratios = {m: cpu[m] / cpu["standard"] for m in methods}
    wall_ratios = {m: wall[m] / wall["standard"] for m in methods}
    targets = {f"PGD-{k} AT": 1.1 * (k + 1), "fast AT": 2.2, "fast AT (clean_metrics=False)": 2.2}
    payload = {
        "machine": machine_info(("torch", "monai", "pytorch-ignite")),
        "config": {"data": args.data.name, "n_images": int(x.shape[0]), "batch_size": args.batch_size, "k": k,
                   "eps": "2/255 L-inf", "model": "SmallCNN() (conv-BN-ReLU, channels 16, 32, 64), 28x28", "repeats": args.repeats,
                   "threads": args.threads,
                   "engine": "monai SupervisedTrainer, 1 epoch; min over repeats of trainer.run(), CPU and wall"},
        "cpu_seconds_per_epoch": {m: round(cpu[m], 4) for m in methods},
        "wall_seconds_per_epoch": {m: round(wall[m], 4) for m in methods},
        "all_runs_wall_cpu": {m: [[round(w, 4), round(c, 4)] for w, c in runs[m]] for m in methods},
        "ratio_to_standard_cpu": {m: round(v, 3) for m, v in ratios.items()},
        "ratio_to_standard_wall": {m: round(v, 3) for m, v in wall_ratios.items()},
        "targets": {m: {"max_ratio": t, "met_cpu": ratios[m] <= t, "met_wall": wall_ratios[m] <= t}
                    for m, t in targets.items()},
    }
    write_json(BENCH_DIR / "results" / "training.json", payload)
    rows = "\n".join(
        f"| {m} | {cpu[m]:.2f} | {wall[m]:.2f} | {ratios[m]:.2f} | {wall_ratios[m]:.2f} | "
        + (f"<= {targets[m]:.2f}: {'met' if ratios[m] <= targets[m] else 'NOT met'}" if m in targets else "-") + " |"
        for m in methods
    )
    mi = payload["machine"]
    body = (
        f"`python bench/training.py` ({mi['date']}; {mi['cpu']}, {args.threads} thread(s), load {mi.get('load_avg_1min_at_start')}"
        f" at start; torch {mi['torch']}, monai {mi['monai']}). One epoch of MONAI's `SupervisedTrainer` on "
        f"{x.shape[0]} PneumoniaMNIST training images (28x28, batch {args.batch_size}), SmallCNN with BatchNorm, "
        f"eps 2/255; minimum over {args.repeats} interleaved repeats of CPU (process) time and of wall time (the "
        "machine is shared: the CPU ratio is the one checked against the target). The adversarial iterations also run a "
        "forward-only clean pass for the clean loss/accuracy metrics unless `clean_metrics=False` (TRADES gets it "
        "for free).\n\n"
        "| method | CPU s / epoch | wall s / epoch | x standard (CPU) | x standard (wall) | target |\n"
        "|---|---|---|---|---|---|\n" + rows
    )
    replace_readme_section(BENCH_DIR / "README.md", "Training", body)
    print(body)


if __name__ == "__main__":
    main()
