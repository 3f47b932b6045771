# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Is mixed precision safe for evaluation? Robust accuracy of each attack in fp32 and in mixed precision (bf16
iterations, fp32 check and refinement), same seeds, on briefly trained PneumoniaMNIST networks (issue 19 item 1).

Networks: the bench's SmallCNN (28x28, the hardening tutorial's model) and MONAI DenseNet121-2D on the images
upsampled to 64x64, each trained from a fixed seed (weights cached in ``--weights``). Attacks: FGSM, BIM, PGD L-inf,
PGD L2 and APGD L-inf, each run on the same test images with the same seed in both precisions. The target is
``|robust accuracy (mixed) - robust accuracy (fp32)| <= 0.005``. Accuracy only: no timings (see bench/attacks.py).
Writes ``bench/results/mixed_precision.json`` and the ``## Mixed precision`` section of ``bench/README.md``.

Usage::

    python bench/mixed_precision.py                               # both networks, 512 test images
    python bench/mixed_precision.py --nets smallcnn --n 64 --steps 2 --train-images 256   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

try:  # python bench/mixed_precision.py, or python -m bench.mixed_precision
    from _common import BENCH_DIR, machine_info, replace_readme_section, write_json
except ImportError:  # pragma: no cover
    from bench._common import BENCH_DIR, machine_info, replace_readme_section, write_json

from monai_robust.attacks import APGD, BIM, FGSM, PGD, AutoAttack
from monai_robust.attacks.precision import cpu_bf16_flags, low_precision_dtype
from monai_robust.networks import SmallCNN

NPZ = Path("/work/shared/data/pneumoniamnist.npz")
NETS = {"smallcnn": (28, 64, 3), "densenet121_2d": (64, 32, 1)}  # size, train batch, epochs
TARGET = 0.005


def _images(path: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as f:
        x = torch.from_numpy(f[f"{split}_images"]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(f[f"{split}_labels"]).long().reshape(-1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, y


def build(name: str) -> torch.nn.Module:
    """The network ``name`` with fixed initial weights."""
    torch.manual_seed(0)
    if name == "smallcnn":  # the hardening tutorial's model: conv-BN-ReLU 16-32-64, pool x2, GAP, linear
        return SmallCNN(spatial_dims=2, in_channels=1, num_classes=2, channels=(16, 32, 64), norm="batch")
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)


def trained(name: str, npz: Path, weights: Path, train_images: int | None) -> torch.nn.Module:
    """``name`` trained briefly (Adam 1e-3, fixed seeds) on PneumoniaMNIST's training split; cached in ``weights``."""
    size, batch, epochs = NETS[name]
    net = build(name)
    path = weights / f"{name}_{train_images or 'all'}.pt"
    if path.is_file():
        net.load_state_dict(torch.load(path))
        return net.eval()
    x, y = _images(npz, "train", size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)[:train_images]
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


def attacks(net: torch.nn.Module, eps_inf: float, eps_l2: float, steps: int, queries: int) -> dict[str, Any]:
    """The attacks of issue 19 with the library's default step sizes; the AutoAttack ensemble with ``steps``
    iterations and ``queries`` Square queries when ``queries > 0``."""
    b = (0.0, 1.0)
    return {
        "FGSM": FGSM(net, eps_inf, bounds=b),
        f"BIM-{steps}": BIM(net, eps_inf, num_steps=steps, bounds=b),
        f"PGD-{steps}-Linf": PGD(net, eps_inf, num_steps=steps, bounds=b),
        f"PGD-{steps}-L2": PGD(net, eps_l2, lp=2, num_steps=steps, bounds=b),
        f"APGD-{steps}-Linf": APGD(net, eps_inf, num_steps=steps, bounds=b),
    } | ({f"AutoAttack-{steps}-Linf (Square {queries})": AutoAttack(net, eps_inf, num_steps=steps, num_queries=queries,
                                                                    bounds=b)} if queries > 0 else {})


def _correct(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        return net(x).argmax(1) == y


def _balanced(correct: torch.Tensor, y: torch.Tensor) -> float:
    return float(np.mean([float(correct[y == c].float().mean()) for c in y.unique()]))


def _interval(k: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of ``k / n``."""
    z, p = 1.96, k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def run_net(name: str, args: argparse.Namespace) -> list[dict]:
    net = trained(name, args.npz, args.weights, args.train_images)
    for p in net.parameters():
        p.requires_grad_(False)
    x, y = _images(args.npz, "test", NETS[name][0])
    x, y = x[: args.n], y[: args.n]
    clean = torch.cat([_correct(net, x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)])
    rows = []
    for attack_name, attack in attacks(net, args.eps_inf, args.eps_l2, args.steps, args.queries).items():
        correct, refined = {}, 0
        for mode in ("fp32", "mixed"):
            attack.set_random_state(0)  # the same seed for every batch in both precisions
            out = []
            for i in range(0, len(x), args.batch):
                xb, yb = x[i : i + args.batch], y[i : i + args.batch]
                adv = attack(xb, yb, amp=mode == "mixed")
                out.append(_correct(net, adv, yb))
                if mode == "mixed":
                    report = attack.last_precision
                    refined += report.refined
                    if not bool((report.success == ~out[-1]).all()):
                        raise RuntimeError(f"{attack_name}: the fp32 check disagrees with the fp32 forward")
            correct[mode] = torch.cat(out)
        n = len(y)
        fp32, mixed = (float(correct[m].float().mean()) for m in ("fp32", "mixed"))
        eps = f"{attack.eps * 255:g}/255" if attack.lp.value == "inf" else f"{attack.eps:g}"
        row = {
            "net": name, "attack": attack_name, "eps": eps, "n": n, "clean_acc": float(clean.float().mean()),
            "robust_acc_fp32": fp32, "robust_acc_mixed": mixed, "diff": mixed - fp32,
            "ci95_fp32": _interval(int(correct["fp32"].sum()), n), "ci95_mixed": _interval(int(correct["mixed"].sum()), n),
            "balanced_fp32": _balanced(correct["fp32"], y), "balanced_mixed": _balanced(correct["mixed"], y),
            "only_fp32_broke": int((correct["mixed"] & ~correct["fp32"]).sum()),
            "only_mixed_broke": int((correct["fp32"] & ~correct["mixed"]).sum()),
            "refined": refined, "within_target": abs(mixed - fp32) <= TARGET,
        }
        print(f"[{name}] {attack_name}: fp32 {fp32:.4f} mixed {mixed:.4f} (n={n}, refined {refined})", file=sys.stderr,
              flush=True)
        rows.append(row)
    return rows


def markdown(payloads: list[dict]) -> str:
    """The ``## Mixed precision`` section from one or more result payloads (e.g. one per network)."""
    m, s = payloads[0]["machine"], payloads[0]["settings"]
    commands = "; ".join(f"`{p['settings']['command'].strip()}`" for p in payloads)
    lines = [
        f"Measured {m['date']} on {m['cpu']} (CPU flags {', '.join(s['cpu_bf16_flags']) or 'none'}; mixed = "
        f"{s['dtype']} autocast iterations, fp32 check and refinement), torch {m['torch']}, MONAI {m['monai']}, "
        f"one thread. Commands: {commands}. Default step sizes (PGD 2.5 eps / steps, BIM 1.25 eps / steps); in "
        "mixed precision PGD and BIM run their last ceil(steps / 5) steps in fp32 on the samples not yet broken in "
        "fp32, FGSM redoes the step in fp32 on those samples, APGD adds ceil(steps / 5) fp32 steps of eps / 4 on "
        "them; AutoAttack decides the clean pass and each attack's success in fp32 (APGD-CE with its refinement). The first n PneumoniaMNIST test images, the same seeds in both precisions; networks trained briefly "
        "from fixed seeds (SmallCNN 28x28: 3 epochs, Adam 1e-3; DenseNet121-2D on the images upsampled to 64x64: "
        "1 epoch on the first 2560 of a fixed permutation of the training images). Robust accuracy is decided by "
        "the fp32 model; accuracy only, no timings (`## Attacks`). *only fp32 / only mixed* = images broken by one "
        "precision and not the other; *refined* = samples given fp32 steps.",
        "",
        "| net | attack | eps | n | clean acc | robust acc fp32 [95 % CI] | robust acc mixed [95 % CI] | diff | "
        "balanced fp32 / mixed | only fp32 / only mixed | refined | within ±0.005 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for p in payloads for r in p["results"]):
        ci_f, ci_m = r["ci95_fp32"], r["ci95_mixed"]
        lines.append(
            f"| {r['net']} | {r['attack']} | {r.get('eps', '?')} | {r['n']} | {r['clean_acc']:.3f} | {r['robust_acc_fp32']:.4f} "
            f"[{ci_f[0]:.3f}, {ci_f[1]:.3f}] | {r['robust_acc_mixed']:.4f} [{ci_m[0]:.3f}, {ci_m[1]:.3f}] | "
            f"{r['diff']:+.4f} | {r['balanced_fp32']:.3f} / {r['balanced_mixed']:.3f} | {r['only_fp32_broke']} / "
            f"{r['only_mixed_broke']} | {r['refined']} | {'yes' if r['within_target'] else 'NO'} |"
        )
    lines += ["", "Regenerate: `python bench/mixed_precision.py` (`--nets`, `--n`, `--steps`, `--eps-inf`, `--eps-l2`; "
              "`--render a.json b.json` rewrites this section from stored results)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", choices=sorted(NETS), default=sorted(NETS))
    p.add_argument("--n", type=int, default=512, help="test images")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps-inf", type=float, default=1 / 255)
    p.add_argument("--eps-l2", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--queries", type=int, default=100, help="Square queries of the AutoAttack row (0: no AutoAttack)")
    p.add_argument("--train-images", type=int, default=None, help="training images per epoch (default all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--npz", type=Path, default=NPZ)
    p.add_argument("--weights", type=Path, default=BENCH_DIR / "results" / "weights")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "mixed_precision.json")
    p.add_argument("--readme", type=Path, default=BENCH_DIR / "README.md")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--render", nargs="+", type=Path, help="only rewrite the README section from these results JSONs")
    args = p.parse_args(argv)
    if args.render:
        payloads = [json.loads(path.read_text()) for path in args.render]
        replace_readme_section(args.readme, "Mixed precision", markdown(payloads))
        return payloads[0]
    torch.set_num_threads(args.threads)
    dtype = low_precision_dtype(True, "cpu")
    settings = {
        "command": "python bench/mixed_precision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "eps_inf": args.eps_inf, "eps_l2": args.eps_l2, "steps": args.steps, "n": args.n,
        "train_images": args.train_images, "cpu_bf16_flags": list(cpu_bf16_flags()), "dtype": str(dtype),
    }
    start, results = time.perf_counter(), []
    for name in args.nets:
        results += run_net(name, args)
        payload = {"machine": machine_info(), "settings": settings, "results": results}
        write_json(args.out, payload)
    payload["settings"]["wall_s"] = time.perf_counter() - start
    write_json(args.out, payload)
    table = markdown([payload])
    if not args.no_readme:
        replace_readme_section(args.readme, "Mixed precision", table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
