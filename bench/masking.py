# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The masking and failure checks (issue 16) on the sparsity-block models, with and without straight-through.

PneumoniaMNIST (28x28, binary, 3:1 pneumonia:normal in training), the package's SmallCNN (conv-BN-ReLU, channels
16, 32, 64: the hardening tutorial's model) plain and with each sparsity block inserted after its first two pooling
stages (``insert_blocks``: TopKSparsify k=0.25, SoftThreshold at the 0.5 quantile, MeanCentredSparsify alpha=0.5),
trained without adversarial training by :func:`~monai_robust.engines.fit.fit_classifier` on the whole training split
(class-weighted cross-entropy, AdamW with a one-cycle schedule, the epoch with the best *validation* balanced accuracy
kept; the test split is never looked at for training or selection). A model whose validation balanced accuracy is
below ``--min-balanced`` (0.8) is not attacked: a near-constant predictor makes every verdict meaningless.

Each kept model is evaluated by :class:`~monai_robust.engines.evaluator.RobustnessEvaluator` with PGD (white box),
Square (score-based black box) and AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at a few L-inf eps, once through the
blocks' own gradients and once through straight-through (identity, BPDA) gradients; the script records the verdicts
``gradient_masking`` and ``attack_convergence`` of the validity section with the robust accuracies, ``n``, 95 %
Wilson intervals and the robust balanced accuracy.

The eps are chosen on the validation split (``eps*``: the smallest candidate at which PGD leaves the plain model
at most half its clean validation accuracy; reported at ``eps*/2``, ``eps*``, ``2 eps*``), the numbers are on the
first ``--n-test`` test images. CPU, one thread; accuracy only (no timing is recorded)::

    python bench/masking.py --data ../shared/data/pneumoniamnist.npz --seeds 0 1 2

Smoke run (seconds; numbers meaningless)::

    python bench/masking.py --train-images 128 --epochs 1 --n-val 16 --n-test 16 --steps 2 --queries 10 \\
        --seeds 0 --min-balanced 0 --out /tmp/masking.json --no-readme
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, machine_info, replace_readme_section, write_json  # noqa: E402

from monai_robust.attacks.autoattack import AutoAttack  # noqa: E402
from monai_robust.attacks.pgd import PGD  # noqa: E402
from monai_robust.attacks.square import Square  # noqa: E402
from monai_robust.data import medmnist_tensors  # noqa: E402
from monai_robust.engines.evaluator import RobustnessEvaluator  # noqa: E402
from monai_robust.engines.fit import classification_accuracy, fit_classifier  # noqa: E402
from monai_robust.engines.probes import ProbeOptions  # noqa: E402
from monai_robust.metrics.intervals import binomial_interval  # noqa: E402
from monai_robust.networks import SmallCNN, insert_blocks, straight_through_mode  # noqa: E402
from monai_robust.networks.blocks.sparse_denoise import MeanCentredSparsify, SoftThreshold, TopKSparsify  # noqa: E402

BOUNDS = (0.0, 1.0)
CANDIDATE_EPS = (0.5, 1.0, 2.0, 4.0, 8.0)  # in 1/255
INSERT_AFTER = ["features.3", "features.7"]  # after the first two pooling stages: 16@14x14 and 32@7x7
BLOCKS = {
    "topk": partial(TopKSparsify, k=0.25),
    "soft_quantile": partial(SoftThreshold, mode="quantile", quantile=0.5),
    "mean_centred": partial(MeanCentredSparsify, alpha=0.5),
}
MODELS = ("plain", *BLOCKS)
ATTACKS = ("pgd", "square", "autoattack")
CHECKS = ("gradient_masking", "attack_convergence", "gradients", "unbounded_eps")


def build(block: str, seed: int) -> nn.Module:
    """A fresh SmallCNN (initial weights from ``seed``), with ``block`` inserted after ``INSERT_AFTER``."""
    torch.manual_seed(seed)
    net = SmallCNN(spatial_dims=2, in_channels=1, num_classes=2, channels=(16, 32, 64), norm="batch")
    if block != "plain":
        insert_blocks(net, INSERT_AFTER, BLOCKS[block], example_input=torch.zeros(1, 1, 28, 28))
    return net


def wilson(accuracy: float, n: int) -> list[float]:
    """The 95 % Wilson score interval of an accuracy measured on ``n`` images."""
    return list(binomial_interval(round(accuracy * n), n, method="wilson"))


def choose_eps(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, dict[str, float]]:
    """``eps*`` (in 1/255): the smallest candidate where PGD leaves at most half the clean validation accuracy."""
    clean = classification_accuracy(net, x, y)
    curve = {}
    for e in CANDIDATE_EPS:
        adv = PGD(net, e / 255, num_steps=steps, bounds=BOUNDS).set_random_state(0)(x, y)
        curve[f"{e:g}"] = classification_accuracy(net, adv, y)
        if curve[f"{e:g}"] <= clean / 2:
            return e, {"clean": clean, **curve}
    return CANDIDATE_EPS[-1], {"clean": clean, **curve}


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], args: argparse.Namespace) -> dict:
    """One evaluator run: per attack and eps the robust accuracy (n, Wilson interval, balanced), and the verdicts."""
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
    rows = []
    for name, a in res["attacks"].items():
        for r in a["results"]:
            row: dict[str, Any] = {"attack": name, "eps_255": round(r["eps"] * 255, 6)}
            if r.get("status") != "ok":
                rows.append({**row, "status": r.get("status"), "error": r.get("error")})
                continue
            n, acc = int(r["n"]), float(r["accuracy"])
            rows.append({**row, "status": "ok", "n": n, "accuracy": acc, "ci95": wilson(acc, n),
                         "balanced_accuracy": r["balanced_accuracy"],
                         "attack_success_rate": r.get("attack_success_rate")})
    verdicts = {c["name"]: {"status": c["status"], "message": c["message"], "details": c.get("details", {})}
                for c in res["validity"] if c["name"] in CHECKS}
    clean = res["clean"]
    return {"clean": {"n": clean["n"], "accuracy": clean["accuracy"], "ci95": wilson(clean["accuracy"], clean["n"]),
                      "balanced_accuracy": clean["balanced_accuracy"]},
            "robust": rows, "validity": verdicts}


def train(block: str, seed: int, data: dict[str, tuple[torch.Tensor, torch.Tensor]], args: argparse.Namespace) -> tuple[nn.Module, dict]:
    """Builds and trains one model (or loads it from ``--cache``, written by a run with the same settings)."""
    net = build(block, seed)
    tag = f"{block}_seed{seed}_ep{args.epochs}_lr{args.lr:g}_n{args.train_images}.pt"
    cached = args.cache / tag if args.cache else None
    if cached is not None and cached.is_file():
        saved = torch.load(cached, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        return net.eval(), {**saved["info"], "loaded_from": str(cached)}
    info = fit_classifier(net, data["train"], data["val"], args.epochs, lr=args.lr, balanced=True)
    info["val_accuracy"] = classification_accuracy(net, *data["val"])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": net.state_dict(), "info": info}, cached)
    return net, info


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = {"train": medmnist_tensors(args.data, "train", limit=args.train_images),
            "val": medmnist_tensors(args.data, "val"), "test": medmnist_tensors(args.data, "test", limit=args.n_test)}
    xva, yva = (t[: args.n_val] for t in data["val"])
    out: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           "machine": machine_info(), "seeds": {}}
    for seed in args.seeds:
        nets, training = {}, {}
        for m in MODELS:
            nets[m], training[m] = train(m, seed, data, args)
            training[m]["test_clean_balanced_accuracy"] = classification_accuracy(nets[m], *data["test"], balanced=True)
            print(f"seed {seed} {m}: val balanced {training[m]['val_best']:.3f} (epoch "
                  f"{int(np.argmax(training[m]['val_per_epoch'])) + 1}), test balanced "
                  f"{training[m]['test_clean_balanced_accuracy']:.3f}", flush=True)
        eps_star, curve = choose_eps(nets["plain"], xva, yva, args.steps)
        eps = [eps_star / 2 / 255, eps_star / 255, 2 * eps_star / 255]
        entry: dict[str, Any] = {"eps_star_255": eps_star, "val_pgd_curve": curve, "training": training, "models": {}}
        for m, net in nets.items():
            if training[m]["val_best"] < args.min_balanced:
                entry["models"][m] = {"skipped": f"validation balanced accuracy {training[m]['val_best']:.3f} < "
                                                 f"{args.min_balanced:g}: not attacked"}
                print(f"seed {seed} {m}: {entry['models'][m]['skipped']}", flush=True)
                continue
            for st in ((False,) if m == "plain" else (False, True)):
                with straight_through_mode(net, st):
                    key = f"{m}/{'straight_through' if st else 'own_gradient'}"
                    entry["models"][key] = evaluate(net, *data["test"], eps, args)
                    v = entry["models"][key]["validity"]
                    print(f"seed {seed} {key}: " + ", ".join(f"{k} {v[k]['status']}" for k in CHECKS if k in v), flush=True)
        out["seeds"][str(seed)] = entry
        if args.partial is not None:
            write_json(args.partial, out)
    return out


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return str(row.get("status"))
    return f"{row['accuracy']:.3f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}] ({row['balanced_accuracy']:.2f})"


def markdown(out: dict[str, Any]) -> str:
    cfg, seeds = out["config"], out["seeds"]
    n_train = cfg["train_images"] or "all 4708"
    lines = [
        f"`python bench/masking.py` ({out['machine']['date']}; CPU, one thread; torch {out['machine']['torch']}; "
        f"accuracy only, no timing). PneumoniaMNIST, the package's SmallCNN (channels 16, 32, 64, batch norm) plain "
        f"and with a sparsity block after its first two pooling stages (TopK k = 0.25, SoftThreshold at the 0.5 "
        f"quantile, MeanCentred alpha = 0.5), trained {cfg['epochs']} epoch(s) on {n_train} training images with "
        f"`fit_classifier(balanced=True)` (class-weighted cross-entropy, AdamW, one-cycle lr peak {cfg['lr']:g}, "
        f"the epoch with the best validation balanced accuracy kept; no adversarial training); a model is attacked "
        f"only if its validation balanced accuracy (all 524 images) is >= {cfg['min_balanced']:g}. "
        f"`RobustnessEvaluator` with PGD-{cfg['steps']}, Square ({cfg['queries']} queries) and AutoAttack "
        f"({cfg['steps']} steps, {cfg['queries']} queries) on the first {cfg['n_test']} test images; eps* chosen on "
        f"the first {cfg['n_val']} validation images (smallest of {', '.join(f'{e:g}' for e in CANDIDATE_EPS)} /255 "
        f"where PGD leaves at most half the plain model's clean accuracy). Robust accuracy with its 95 % Wilson "
        f"interval (n = {cfg['n_test']}) and robust balanced accuracy in parentheses; verdicts of the validity "
        f"section: `gradient_masking` (Square stronger than every white-box attack at the same eps) and "
        f"`attack_convergence`. Seeds {', '.join(seeds)} (initial weights and shuffling).",
        "",
        "Training (validation: all 524 images; test: the first " + str(cfg["n_test"]) + " test images):",
        "",
        "| seed | model | best epoch | val acc | val balanced acc | test clean balanced acc |",
        "|---|---|---|---|---|---|",
    ]
    for seed, entry in seeds.items():
        for m, t in entry["training"].items():
            lines.append(f"| {seed} | {m} | {int(np.argmax(t['val_per_epoch'])) + 1} of {t['epochs']} | "
                         f"{t['val_accuracy']:.3f} | {t['val_best']:.3f} | {t['test_clean_balanced_accuracy']:.3f} |")
    lines += ["", "Verdicts (`gradient_masking` / `attack_convergence`) per model, gradient and seed:", "",
              "| model / gradient | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    keys = list(dict.fromkeys(k for entry in seeds.values() for k in entry["models"]))
    for key in keys:
        cells = []
        for entry in seeds.values():
            r = entry["models"].get(key)
            cells.append("-" if r is None else r.get("skipped") or
                         f"{r['validity']['gradient_masking']['status']} / {r['validity']['attack_convergence']['status']}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
    for seed, entry in seeds.items():
        es = entry["eps_star_255"]
        lines += [f"**Seed {seed}** (eps* = {es:g}/255)", "",
                  "| model / gradient | clean acc [CI] (bal) | eps /255 | PGD | Square | AutoAttack |",
                  "|---|---|---|---|---|---|"]
        for key, r in entry["models"].items():
            if "skipped" in r:
                lines.append(f"| {key} | {r['skipped']} | | | | |")
                continue
            by = {(row["attack"], row["eps_255"]): row for row in r["robust"]}
            for i, e in enumerate(sorted({row["eps_255"] for row in r["robust"]})):
                head = f"{key} | {_cell({'status': 'ok', **r['clean']})}" if i == 0 else " | "
                lines.append(f"| {head} | {e:g} | " + " | ".join(_cell(by.get((a, e))) for a in ATTACKS) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=BENCH_DIR.parent.parent / "shared" / "data" / "pneumoniamnist.npz")
    p.add_argument("--train-images", type=int, default=None, help="first n training images (default all 4708)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3, help="one-cycle peak learning rate")
    p.add_argument("--min-balanced", type=float, default=0.8, help="validation balanced accuracy needed to attack")
    p.add_argument("--n-val", type=int, default=100, help="validation images for choosing eps*")
    p.add_argument("--n-test", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache", type=Path, default=None, help="folder for the trained weights (reused when present)")
    p.add_argument("--partial", type=Path, default=None, help="JSON written after each seed")
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
