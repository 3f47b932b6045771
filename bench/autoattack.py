# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""monai_robust's AutoAttack vs torchattacks' AutoAttack: same model, same images, same settings.

Two tasks on real images (PneumoniaMNIST, 28x28), each with a small CNN trained on the train split:

* ``rotation``: which multiple of 90 degrees an image was rotated by (4 classes), where torchattacks' standard
  ``AutoAttack`` runs: its APGD-CE, APGD-T, FAB-T (its attacks' default 10 iterations) and Square (5000 queries);
  ours with the same numbers (``num_steps=10``, ``num_queries=5000``), and ours with the authors' 100 iterations.
* ``pneumonia``: the binary task, where torchattacks' ``AutoAttack`` raises ``IndexError`` (its targeted DLR reads the
  3rd and 4th largest logits); it is compared with torchattacks' ``MultiAttack`` of the attacks that run there
  (APGD-CE, FAB-T, Square; the same order and per-sample worst case).

Reports per method the process CPU seconds (minimum over ``--repeats``; one thread; on a shared machine the CPU time
is the robust measure, wall times are in the JSON), the robust accuracy with its 95 % Wilson interval and ``n``, the
robust balanced accuracy, and for ours which attack broke how many images. Target (issue 16): ours at most
torchattacks' time, robust accuracy within 0.01 (ours never higher beyond noise).

Run from the repository root on an idle machine (CPU, one thread; the defaults take tens of minutes, most of it
Square's 5000 queries on the robust images)::

    python bench/autoattack.py --data ../shared/data/pneumoniamnist.npz

Smoke run (seconds; numbers meaningless)::

    python bench/autoattack.py --n-test 16 --train-images 256 --epochs 1 --queries 20 --repeats 1 \\
        --out /tmp/autoattack.json --no-readme
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, MinTimer, machine_info, replace_readme_section, write_json  # noqa: E402

from monai_robust.attacks.autoattack import AutoAttack  # noqa: E402
from monai_robust.data import medmnist_tensors  # noqa: E402
from monai_robust.networks import SmallCNN  # noqa: E402


def load(path: Path) -> dict[str, torch.Tensor]:
    """The train and test splits as float images in [0, 1] ``(N, 1, 28, 28)`` and labels ``(N,)``."""
    (train_x, train_y), (test_x, test_y) = medmnist_tensors(path, "train"), medmnist_tensors(path, "test")
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def rotate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``i`` rotated by ``(i mod 4) * 90`` degrees, and its class ``i mod 4``."""
    k = torch.arange(len(x)) % 4
    return torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)]), k


def train(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net, bs = SmallCNN(num_classes=classes, channels=(16, 32, 32), norm="batch"), 64  # conv-BN-ReLU, pool x2
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for k in range(0, len(x), bs):
            idx = perm[k : k + bs]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def quality(net: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Robust accuracy with ``n`` and its 95 % Wilson interval, and the robust balanced accuracy."""
    with torch.no_grad():
        ok = net(adv).argmax(1) == y
    n, k = len(y), int(ok.sum())
    p, z = k / n, 1.959964
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    recalls = [float(ok[y == c].float().mean()) for c in torch.unique(y).tolist()]
    return {"n": n, "robust_acc": p, "ci95": [centre - half, centre + half], "robust_balanced_acc": float(np.mean(recalls))}


def peers(task: str, net: nn.Module, eps: float, norm: str, classes: int, steps: int, queries: int, seed: int) -> Any:
    """torchattacks' standard AutoAttack (Square's hard-coded 5000 queries set to ``queries``), or on two classes
    the MultiAttack of the attacks that run there."""
    if task == "rotation":
        aa = torchattacks.AutoAttack(net, norm=norm, eps=eps, version="standard", n_classes=classes, seed=seed)
        for attack in aa._autoattack.attacks:
            if isinstance(attack, torchattacks.Square):
                attack.n_queries = queries
            else:
                attack.steps = steps
        return aa
    return torchattacks.MultiAttack([
        torchattacks.APGD(net, norm=norm, eps=eps, steps=steps, seed=seed),
        torchattacks.FAB(net, norm=norm, eps=eps, steps=steps, n_classes=classes, multi_targeted=True, seed=seed),
        torchattacks.Square(net, norm=norm, eps=eps, n_queries=queries, seed=seed),
    ])


def run_task(task: str, data: dict[str, torch.Tensor], args: argparse.Namespace) -> list[dict[str, Any]]:
    if task == "rotation":
        (x_tr, y_tr), (x, y), classes = rotate(data["train_x"][: args.train_images]), rotate(data["test_x"][: args.n_test]), 4
    else:
        x_tr, y_tr, classes = data["train_x"][: args.train_images], data["train_y"][: args.train_images], 2
        x, y = data["test_x"][: args.n_test], data["test_y"][: args.n_test]
    net = train(x_tr, y_tr, classes, args.epochs, args.seed)
    rows = [{"task": task, "norm": "-", "eps": 0.0, "method": "clean", **quality(net, x, y)}]
    for norm, eps in (("Linf", args.linf_eps / 255), ("L2", args.l2_eps)):
        lp: Any = "inf" if norm == "Linf" else 2
        def ours(steps: int, eps: float = eps, lp: Any = lp) -> Any:
            attack = AutoAttack(net, eps, lp=lp, bounds=(0.0, 1.0), num_steps=steps, num_queries=args.queries)
            return attack.set_random_state(args.seed).run(x, y)

        theirs = peers(task, net, eps, norm, classes, args.steps, args.queries, args.seed)
        methods = {"torchattacks": partial(theirs, x, y), "ours": partial(ours, args.steps)}
        if args.authors_steps:
            methods["ours, 100 iterations"] = partial(ours, 100)
        timer = MinTimer()
        outs: dict[str, Any] = {}
        for _ in range(args.repeats):  # interleaved repeats
            for name, fn in methods.items():
                outs[name] = timer.time(name, fn)
        for name, out in outs.items():
            adv, result = out if isinstance(out, tuple) else (out, None)
            row = {"task": task, "norm": norm, "eps": eps, "method": name, **quality(net, adv, y),
                   "cpu_s": timer.best_cpu[name], "wall_s": timer.best[name]}
            if result is not None:
                row["broken_by"] = {str(k): v for k, v in result.counts().items()}
            rows.append(row)
            print(f"{task:9s} {norm:4s} {name:22s} robust acc {row['robust_acc']:.3f} (n={row['n']}) "
                  f"CPU {row['cpu_s']:.1f}s {row.get('broken_by', '')}", flush=True)
    return rows


def readme_section(payload: dict[str, Any]) -> str:
    m, a = payload["machine"], payload["args"]
    lines = [
        f"`python bench/autoattack.py` ({m['date']}; {m['cpu']}, {m['torch_threads']} thread(s), load "
        f"{m.get('load_avg_1min_at_start', '?')} at start; torch {m['torch']}, torchattacks {m['torchattacks']}). "
        f"{a['n_test']} PneumoniaMNIST test images per task, small CNNs trained {a['epochs']} epoch(s) on "
        f"{a['train_images']} training images; APGD-CE, APGD-T, FAB-T at {a['steps']} iterations, Square at "
        f"{a['queries']} queries; L-inf eps {a['linf_eps']:g}/255, L2 eps {a['l2_eps']:g}. CPU seconds: minimum over "
        f"{a['repeats']} interleaved repeat(s). On 2 classes torchattacks' AutoAttack raises IndexError; its row there "
        "is its MultiAttack of APGD-CE, FAB-T and Square.",
        "",
        "| task | norm | method | CPU s | robust acc [95 % CI] (n) | robust balanced acc | broken by |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for r in payload["rows"]:
        cpu = f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-"
        lines.append(
            f"| {r['task']} | {r['norm']} | {r['method']} | {cpu} | {r['robust_acc']:.3f} [{r['ci95'][0]:.3f}, "
            f"{r['ci95'][1]:.3f}] ({r['n']}) | {r['robust_balanced_acc']:.3f} | {r.get('broken_by', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=BENCH_DIR.parents[1] / "shared" / "data" / "pneumoniamnist.npz")
    parser.add_argument("--tasks", nargs="+", default=["rotation", "pneumonia"], choices=["rotation", "pneumonia"])
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="torchattacks' default iterations")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--linf-eps", type=float, default=4.0, help="in 1/255")
    parser.add_argument("--l2-eps", type=float, default=0.3)
    parser.add_argument("--authors-steps", action="store_true", help="also ours at the authors' 100 iterations")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "autoattack.json")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--render", type=Path, help="only rewrite the README section from a saved JSON")
    args = parser.parse_args()
    if args.render:
        replace_readme_section(BENCH_DIR / "README.md", "AutoAttack", readme_section(json.loads(args.render.read_text())))
        return
    torch.set_num_threads(1)
    data = load(args.data)
    info = machine_info(("torch", "monai", "torchattacks"))
    rows = [row for task in args.tasks for row in run_task(task, data, args)]
    payload = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "rows": rows}
    write_json(args.out, payload)
    if not args.no_readme:
        replace_readme_section(BENCH_DIR / "README.md", "AutoAttack", readme_section(payload))


if __name__ == "__main__":
    main()
