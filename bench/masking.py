# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The masking and failure checks (issue 16) on the sparsity-block models, with and without straight-through.

PneumoniaMNIST (28x28, binary), the tutorial's SmallCNN (``tutorials/harden_pneumoniamnist.py``) plain and with each
sparsity block inserted after its first two pooling stages (``insert_blocks``: TopKSparsify k=0.25, SoftThreshold
at the 0.5 quantile, MeanCentredSparsify alpha=0.5), trained briefly without adversarial training. Each model is
evaluated by :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` with PGD (white box), Square (score-based
black box) and AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at a few L-inf eps, once through the blocks' own
gradients and once through straight-through (identity, BPDA) gradients; the script records the verdicts
``gradient_masking`` and ``attack_convergence`` of the validity section with the robust accuracies, ``n`` and 95 %
Wilson intervals, and the robust balanced accuracy (mean of sensitivity and specificity).

The eps are chosen on the validation split (``eps*``: the smallest candidate at which PGD leaves the plain model
at most half its clean validation accuracy; reported at ``eps*/2``, ``eps*``, ``2 eps*``), the numbers are on the
test split. Settings are small (a loaded CPU); the defaults take minutes::

    python bench/masking.py --data ../shared/data/pneumoniamnist.npz

Smoke run (seconds; numbers meaningless)::

    python bench/masking.py --train-images 128 --epochs 1 --n-val 16 --n-test 16 --steps 2 --queries 10 \\
        --seeds 0 --out /tmp/masking.json --no-readme
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, load_tutorial, machine_info, replace_readme_section, write_json  # noqa: E402

from monai_robust.attacks.autoattack import AutoAttack  # noqa: E402
from monai_robust.attacks.pgd import PGD  # noqa: E402
from monai_robust.attacks.square import Square  # noqa: E402
from monai_robust.data import read_medmnist  # noqa: E402
from monai_robust.engines.evaluator import RobustnessEvaluator  # noqa: E402
from monai_robust.engines.probes import ProbeOptions  # noqa: E402
from monai_robust.networks.utils import insert_blocks, straight_through_mode  # noqa: E402

BOUNDS = (0.0, 1.0)
CANDIDATE_EPS = (0.5, 1.0, 2.0, 4.0, 8.0)  # in 1/255
MODELS = ("plain", "topk", "soft_quantile", "mean_centred")
CHECKS = ("gradient_masking", "attack_convergence", "gradients", "unbounded_eps")


def split(path: Path, name: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a split in [0, 1] and their labels."""
    images, labels = read_medmnist(path, name)
    return torch.from_numpy(images[:n]).float().div(255), torch.from_numpy(labels[:n]).long()


def build(tutorial: Any, block: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = tutorial.SmallCNN()
    if block != "plain":
        insert_blocks(net, tutorial.INSERT_AFTER, tutorial.BLOCKS[block], example_input=torch.zeros(1, 1, 28, 28))
    return net


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for k in range(0, len(x), 64):
            idx = perm[k : k + 64]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def wilson(p: float, n: int, z: float = 1.959964) -> list[float]:
    """The 95 % Wilson score interval of a proportion ``p`` of ``n``."""
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def choose_eps(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, dict[str, float]]:
    """``eps*`` (in 1/255): the smallest candidate where PGD leaves at most half the clean validation accuracy."""
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).float().mean())
    curve = {}
    for e in CANDIDATE_EPS:
        adv = PGD(net, e / 255, num_steps=steps, bounds=BOUNDS).set_random_state(0)(x, y)
        with torch.no_grad():
            curve[f"{e:g}"] = float((net(adv).argmax(1) == y).float().mean())
        if curve[f"{e:g}"] <= clean / 2:
            return e, {"clean": clean, **curve}
    return CANDIDATE_EPS[-1], {"clean": clean, **curve}


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], args: argparse.Namespace) -> dict:
    """One evaluator run: per attack and eps the robust accuracy (n, interval, balanced), and the verdicts."""
    attacks = {
        "pgd": PGD(net, num_steps=args.steps, bounds=BOUNDS),
        "square": Square(net, num_queries=args.queries, bounds=BOUNDS),
        "autoattack": AutoAttack(net, num_steps=args.steps, num_queries=args.queries, bounds=BOUNDS),
    }
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = RobustnessEvaluator("cpu", loader, net, attacks, eps=eps, seed=0, progress=False,
                                 probe_options=ProbeOptions(probe_size=16))
        ev.run()
    res = ev.results
    rows: dict[str, dict[str, Any]] = {}
    for name, a in res["attacks"].items():
        for r in a["results"]:
            if r.get("status") != "ok":
                rows[f"{name}@{r['eps'] * 255:g}"] = {"status": r.get("status"), "error": r.get("error")}
                continue
            n, acc = int(r["n"]), float(r["accuracy"])
            rows[f"{name}@{r['eps'] * 255:g}"] = {
                "n": n, "accuracy": acc, "ci95": wilson(acc, n),
                "balanced_accuracy": (r["sensitivity"] + r["specificity"]) / 2,
                "attack_success_rate": r.get("attack_success_rate"),
            }
    verdicts = {c["name"]: {"status": c["status"], "message": c["message"], "details": c.get("details", {})}
                for c in res["validity"] if c["name"] in CHECKS}
    clean = res["clean"]
    return {"clean": {"n": clean["n"], "accuracy": clean["accuracy"], "ci95": wilson(clean["accuracy"], clean["n"]),
                      "balanced_accuracy": (clean["sensitivity"] + clean["specificity"]) / 2},
            "robust": rows, "validity": verdicts}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tutorial = load_tutorial("harden_pneumoniamnist")
    xtr, ytr = split(args.data, "train", args.train_images)
    xva, yva = split(args.data, "val", args.n_val)
    xte, yte = split(args.data, "test", args.n_test)
    out: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           "machine": machine_info(), "seeds": {}}
    for seed in args.seeds:
        nets = {m: train(build(tutorial, m, seed), xtr, ytr, args.epochs, seed) for m in MODELS}
        eps_star, curve = choose_eps(nets["plain"], xva, yva, args.steps)
        eps = [eps_star / 2 / 255, eps_star / 255, 2 * eps_star / 255]
        entry: dict[str, Any] = {"eps_star_255": eps_star, "val_pgd_curve": curve, "models": {}}
        for m, net in nets.items():
            for st in ((False,) if m == "plain" else (False, True)):
                with straight_through_mode(net, st):
                    key = f"{m}/{'straight_through' if st else 'own_gradient'}"
                    entry["models"][key] = evaluate(net, xte, yte, eps, args)
                    v = entry["models"][key]["validity"]
                    print(f"seed {seed} {key}: " + ", ".join(f"{k} {v[k]['status']}" for k in CHECKS if k in v), flush=True)
        out["seeds"][str(seed)] = entry
    return out


def markdown(out: dict[str, Any]) -> str:
    cfg = out["config"]
    lines = [
        f"`python bench/masking.py` ({out['machine']['date']}; CPU, one thread; torch {out['machine']['torch']}). "
        f"PneumoniaMNIST, the tutorial's SmallCNN plain and with a sparsity block after its first two pooling stages, "
        f"trained {cfg['epochs']} epochs on {cfg['train_images']} training images (no adversarial training); "
        f"`RobustnessEvaluator` with PGD-{cfg['steps']}, Square ({cfg['queries']} queries) and AutoAttack "
        f"({cfg['steps']} steps, {cfg['queries']} queries) on the first {cfg['n_test']} test images; eps* chosen on "
        f"the first {cfg['n_val']} validation images (smallest of {', '.join(f'{e:g}' for e in CANDIDATE_EPS)} /255 "
        f"where PGD leaves at most half the plain model's clean accuracy). Robust accuracy with its 95 % Wilson "
        f"interval (n = {cfg['n_test']}) and robust balanced accuracy (bal); verdicts of the validity section: "
        f"`gradient_masking` (Square stronger than every white-box attack at the same eps) and `attack_convergence`.",
        "",
    ]
    for seed, entry in out["seeds"].items():
        es = entry["eps_star_255"]
        lines += [f"**Seed {seed}** (eps* = {es:g}/255)", "",
                  "| model / gradient | clean acc (bal) | eps /255 | PGD | Square | AutoAttack | gradient_masking | attack_convergence |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, r in entry["models"].items():
            for i, e in enumerate((es / 2, es, 2 * es)):
                cells = []
                for a in ("pgd", "square", "autoattack"):
                    row = r["robust"].get(f"{a}@{e:g}", {})
                    cells.append(f"{row['accuracy']:.3f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}] ({row['balanced_accuracy']:.2f})"
                                 if "accuracy" in row else str(row.get("status")))
                head = f"{key} | {r['clean']['accuracy']:.3f} ({r['clean']['balanced_accuracy']:.2f})" if i == 0 else " | "
                tail = (f" | {r['validity']['gradient_masking']['status']} | {r['validity']['attack_convergence']['status']}"
                        if i == 0 else " | | ")
                lines.append(f"| {head} | {e:g} | " + " | ".join(cells) + tail + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=BENCH_DIR.parent.parent / "shared" / "data" / "pneumoniamnist.npz")
    p.add_argument("--train-images", type=int, default=1536)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--n-test", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "masking.json")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--combine", type=Path, nargs="+", help="merge the seeds of earlier runs' JSONs instead of running")
    args = p.parse_args()
    torch.set_num_threads(1)
    np.random.seed(0)
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        out = {**parts[0], "seeds": {k: v for part in parts for k, v in part["seeds"].items()}}
        out["config"] = {**out["config"], "seeds": [int(k) for k in out["seeds"]]}
    else:
        out = run(args)
    write_json(args.out, out)
    if not args.no_readme:
        replace_readme_section(BENCH_DIR / "README.md", "Masking checks on sparsity blocks", markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
