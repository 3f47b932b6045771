# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""SMIA vs PGD/BIM on PneumoniaMNIST: robust accuracy and how smooth / stable the perturbations are; and, with
``--cost-only``, the per-step cost of SMIA over PGD on small 3D volumes.

Accuracy (the default): per seed, trains a small CNN on the whole training split with
:func:`~monai_robust.engines.fit.fit_classifier` (class-weighted cross-entropy, AdamW with a one-cycle schedule,
the epoch with the best *validation* balanced accuracy kept), then attacks the test split at eps in {1, 2, 4}/255
(L-inf, 10 steps). Every attack runs at the same step size (``--step-factor`` x eps / steps, default BIM's 1.25) and
number of steps, so that only the objective differs: without random start BIM (= SMIA with beta = 0) and SMIA with
several beta, smoothing the adversarial image (``smoothing="image"``, the default) or only the perturbation; with
the same seeded random start PGD and SMIA beta = 1. For each it reports robust accuracy with its 95 % Wilson interval
and ``n``, robust balanced accuracy, the paired comparison with BIM (or PGD, for the random-start group): images
fooled by one attack only, and the exact two-sided McNemar p-value; the stabilization KL terms, and the smoothness of
δ: total variation (mean absolute difference between neighbouring pixels, in units of eps) and the fraction of δ's
energy above 0.25 cycles/pixel; the table goes to the ``## SMIA`` section of ``bench/README.md``. No timing (the
machine may be loaded). Run from the repository root (CPU, one
thread; a few minutes per seed)::

    python bench/smia.py --data ../shared/data/pneumoniamnist.npz --seeds 0 1 2 --out bench/results/smia.json
    python bench/smia.py --render bench/results/smia.json   # rewrite the README section from a saved run

Cost (``--cost-only``, under 2 minutes on an idle core): SMIA beta = 1 and PGD (same steps, no random start, no
early stop, fp32) on 4 random volumes of 32^3 and 48^3 through an untrained 3D SmallCNN; the per-step process CPU
time and wall time are the difference between runs of ``--cost-steps`` and 1 step divided by the step difference
(minimum over ``--cost-repeats``), so the shared start and final check cancel; the samples forwarded per step are
counted with a hook; the network alone on 2N and on N samples gives the floor of the ratio. Writes
``bench/results/smia_cost.json`` and the ``## SMIA: 3D cost per step`` section of
``bench/README.md``. Run it on an idle machine::

    python bench/smia.py --cost-only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, MinTimer, machine_info, replace_readme_section, write_json  # noqa: E402

from monai_robust.attacks.pgd import BIM, PGD  # noqa: E402
from monai_robust.attacks.smia import SMIA  # noqa: E402
from monai_robust.data import MEDMNIST_SPLITS, medmnist_tensors  # noqa: E402
from monai_robust.engines.fit import classification_accuracy, fit_classifier  # noqa: E402
from monai_robust.metrics.intervals import binomial_interval  # noqa: E402
from monai_robust.networks import SmallCNN  # noqa: E402

ROOT = BENCH_DIR.parent


def load(path: Path) -> dict[str, torch.Tensor]:
    """The three splits as float images in [0, 1] ``(N, 1, 28, 28)`` and labels ``(N,)``."""
    tensors = {split: medmnist_tensors(path, split) for split in MEDMNIST_SPLITS}
    return {f"{split}_{k}": t[i] for split, t in tensors.items() for i, k in enumerate("xy")}


def train(data: dict[str, torch.Tensor], epochs: int, width: int, seed: int) -> tuple[nn.Module, dict]:
    """The classifier attacked: 3 conv-BN-ReLU stages, dropout 0.3, trained by ``fit_classifier(balanced=True)``."""
    torch.manual_seed(seed)
    net = SmallCNN(channels=(width, 2 * width, 2 * width), norm="batch", dropout=0.3)
    fit = fit_classifier(net, (data["train_x"], data["train_y"]), (data["val_x"], data["val_y"]), epochs, balanced=True)
    test = (data["test_x"], data["test_y"])
    info = {"arch": f"3 conv-BN-ReLU stages, width {width}, dropout 0.3", "seed": seed, **fit,
            "val_acc": classification_accuracy(net, data["val_x"], data["val_y"]),
            "test_acc": classification_accuracy(net, *test), "test_balanced_acc": classification_accuracy(net, *test, balanced=True)}
    info.pop("train_time_s")
    return net, info


def balanced(correct: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-class recall of the per-image verdicts ``correct``."""
    return float(torch.stack([correct[y == c].float().mean() for c in torch.unique(y)]).mean())


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value for ``only_a`` vs ``only_b`` discordant pairs (binomial, p = 1/2)."""
    k, n = min(only_a, only_b), only_a + only_b
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def smoothness(delta: torch.Tensor, eps: float) -> dict[str, float]:
    """Total variation per pixel (in units of eps) and high-frequency energy fraction of δ (N, 1, H, W)."""
    tv = (delta.diff(dim=-1).abs().mean(dim=(1, 2, 3)) + delta.diff(dim=-2).abs().mean(dim=(1, 2, 3))) / eps
    power = torch.fft.fft2(delta).abs().pow(2)
    fy = torch.fft.fftfreq(delta.shape[-2]).reshape(-1, 1)
    fx = torch.fft.fftfreq(delta.shape[-1]).reshape(1, -1)
    high = (fy.pow(2) + fx.pow(2)).sqrt() > 0.25
    hf = (power * high).sum(dim=(1, 2, 3)) / power.sum(dim=(1, 2, 3)).clamp_min(1e-20)
    return {"tv_per_px_over_eps": float(tv.mean()), "hf_energy_frac": float(hf.mean())}


def attack_seed(net: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, seed: int) -> list[dict]:
    """Every attack at every eps on ``(x, y)``: one row each (see the module docstring)."""
    with torch.no_grad():
        clean_pred_ok = net(x).argmax(1) == y
    probe_img = SMIA(net, 0.0, sigma=args.sigma, bounds=(0.0, 1.0))
    probe_pert = SMIA(net, 0.0, sigma=args.sigma, smoothing="perturbation", bounds=(0.0, 1.0))
    rows = []
    for eps_255 in (1, 2, 4):
        eps = eps_255 / 255
        # equal step size, start and steps for every attack: only beta (and the smoothing) differ within a group
        common = {"num_steps": args.num_steps, "bounds": (0.0, 1.0), "step_size": args.step_factor * eps / args.num_steps}
        smia_kw = {**common, "sigma": args.sigma}
        attacks = {  # name: (attack, the baseline of its group)
            "BIM": (BIM(net, eps, **common), None),
            "SMIA b=1": (SMIA(net, eps, beta=1.0, **smia_kw), "BIM"),
            "SMIA b=10": (SMIA(net, eps, beta=10.0, **smia_kw), "BIM"),
            "SMIA-pert b=10": (SMIA(net, eps, beta=10.0, smoothing="perturbation", **smia_kw), "BIM"),
            "PGD (random start)": (PGD(net, eps, **common), None),  # same seed below: SMIA's random start
            "SMIA b=1 (random start)": (SMIA(net, eps, beta=1.0, random_start=True, **smia_kw), "PGD (random start)"),
        }
        correct = {}
        for name, (attack, baseline) in attacks.items():
            attack.set_random_state(seed)
            adv = attack(x, y)
            delta = adv - x
            with torch.no_grad():
                correct[name] = net(adv).argmax(1) == y
            n, k = len(y), int(correct[name].sum())
            row = {
                "seed": seed, "eps_255": eps_255, "attack": name, "n": n,
                "robust_acc": k / n, "robust_acc_ci95_wilson": list(binomial_interval(k, n, method="wilson")),
                "robust_balanced_acc": balanced(correct[name], y),
                "success_on_correct": float((~correct[name])[clean_pred_ok].float().mean()),
                "kl_smoothed_image": float(probe_img.stabilization(adv).mean()),
                "kl_smoothed_delta": float(probe_pert.stabilization(adv, clean=x).mean()),
                "mean_abs_delta_over_eps": float(delta.abs().mean() / eps),
                **smoothness(delta, eps),
                "repr": repr(attack),
            }
            if baseline is not None:  # paired with its group's baseline: same images, same start
                only_this = int((~correct[name] & correct[baseline]).sum())
                only_base = int((correct[name] & ~correct[baseline]).sum())
                row["vs"] = {"baseline": baseline, "fooled_only_by_this": only_this, "fooled_only_by_baseline": only_base,
                             "mcnemar_p": mcnemar(only_this, only_base)}
            rows.append(row)
            vs = row.get("vs")
            print(f"seed {seed} eps {eps_255}/255 {name:24s} robust acc {row['robust_acc']:.3f} "
                  f"[{row['robust_acc_ci95_wilson'][0]:.3f}, {row['robust_acc_ci95_wilson'][1]:.3f}] "
                  f"bal {row['robust_balanced_acc']:.3f}  KL(img) {row['kl_smoothed_image']:.4f}  "
                  f"TV/eps {row['tv_per_px_over_eps']:.3f}  HF {row['hf_energy_frac']:.3f}"
                  + (f"  vs {vs['baseline']}: +{vs['fooled_only_by_this']}/-{vs['fooled_only_by_baseline']} "
                     f"p={vs['mcnemar_p']:.3g}" if vs else ""), flush=True)
    return rows


def cost(args: argparse.Namespace) -> dict[str, Any]:
    """Per-step process CPU and wall seconds of SMIA beta = 1 and PGD on 3D volumes (see the module docstring)."""
    device = torch.device(args.device)
    out: dict[str, Any] = {"benchmark": "SMIA beta=1 vs PGD per-step cost, 3D, fp32, no early stop", "machine": machine_info(),
                           "steps": [1, args.cost_steps], "repeats": args.cost_repeats, "device": str(device), "shapes": {}}
    forwarded = [0]  # samples through the network, counted by a forward pre-hook

    def count(_module: nn.Module, inputs: tuple) -> None:
        forwarded[0] += inputs[0].shape[0]

    for side in (32, 48):
        torch.manual_seed(0)
        net = SmallCNN(spatial_dims=3, channels=(16, 32, 32), norm="batch").to(device).eval()
        x = torch.rand(4, 1, side, side, side, device=device)
        y = torch.arange(4, device=device) % 2
        hook = net.register_forward_pre_hook(count)
        timer, samples = MinTimer(), {}
        kw = {"bounds": (0.0, 1.0), "early_stop": False, "amp": False, "step_size": 0.5 / 255}
        for _ in range(args.cost_repeats):
            for steps in (1, args.cost_steps):
                for name, attack in (("PGD", PGD(net, 2 / 255, num_steps=steps, **kw)),
                                     ("SMIA b=1", SMIA(net, 2 / 255, beta=1.0, num_steps=steps, **kw))):
                    attack.set_random_state(0)
                    forwarded[0] = 0
                    timer.time(f"{name}/{steps}", lambda: attack(x, y))  # noqa: B023 (called at once)
                    samples[f"{name}/{steps}"] = forwarded[0]
        hook.remove()
        for k in (1, 2):  # the network alone, forward and input-gradient backward on N and on 2N samples
            xk = x.repeat(k, 1, 1, 1, 1).requires_grad_(True)
            for _ in range(args.cost_repeats):
                timer.time(f"network/{k}N", lambda: torch.autograd.grad(net(xk).logsumexp(1).sum(), xk))  # noqa: B023
        dsteps = args.cost_steps - 1
        per_step = {name: {"cpu_s": (timer.best_cpu[f"{name}/{args.cost_steps}"] - timer.best_cpu[f"{name}/1"]) / dsteps,
                           "wall_s": (timer.best[f"{name}/{args.cost_steps}"] - timer.best[f"{name}/1"]) / dsteps,
                           "samples_forwarded_per_step": (samples[f"{name}/{args.cost_steps}"] - samples[f"{name}/1"]) / dsteps}
                    for name in ("PGD", "SMIA b=1")}
        ratio = {k: per_step["SMIA b=1"][k] / per_step["PGD"][k] for k in ("cpu_s", "wall_s", "samples_forwarded_per_step")}
        network = {"cpu_s_n": timer.best_cpu["network/1N"], "cpu_s_2n": timer.best_cpu["network/2N"],
                   "cpu_ratio_2n_over_n": timer.best_cpu["network/2N"] / timer.best_cpu["network/1N"],
                   "wall_ratio_2n_over_n": timer.best["network/2N"] / timer.best["network/1N"]}
        out["shapes"][f"4x{side}^3"] = {"per_step": per_step, "ratio_smia_over_pgd": ratio, "network_alone": network}
        print(f"4x{side}^3: per step PGD {per_step['PGD']['cpu_s']:.3f} s CPU, SMIA {per_step['SMIA b=1']['cpu_s']:.3f} s "
              f"CPU: ratio CPU {ratio['cpu_s']:.2f}, wall {ratio['wall_s']:.2f}, samples forwarded "
              f"{ratio['samples_forwarded_per_step']:.2f}; network alone 2N/N CPU {network['cpu_ratio_2n_over_n']:.2f}",
              flush=True)
    return out


def cost_markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = [f"`python bench/smia.py --cost-only` ({m['date']}; {m['cuda'] or m['cpu']}, {m['torch_threads']} thread(s), "
             f"load {m.get('load_avg_1min_at_start')} at start; torch {m['torch']}). SMIA beta = 1 against PGD at the "
             f"same step size and steps (no random start, no early stop, fp32) on 4 random volumes through an "
             f"untrained 3D SmallCNN (channels 16, 32, 32, batch norm). Per step: the difference between a "
             f"{out['steps'][1]}-step and a 1-step run over {out['steps'][1] - 1}, minimum over {out['repeats']} "
             "repeats (the shared start and final check cancel). Last column: the network alone (forward and "
             "input-gradient backward) on 2N samples over N, the floor of SMIA's ratio.", "",
             "| volumes | PGD CPU s/step | SMIA CPU s/step | SMIA/PGD CPU | SMIA/PGD wall | SMIA/PGD samples forwarded "
             "| network 2N/N CPU |",
             "|---|---|---|---|---|---|---|"]
    for shape, r in out["shapes"].items():
        ps, ratio = r["per_step"], r["ratio_smia_over_pgd"]
        lines.append(f"| {shape} | {ps['PGD']['cpu_s']:.3f} | {ps['SMIA b=1']['cpu_s']:.3f} | {ratio['cpu_s']:.2f} | "
                     f"{ratio['wall_s']:.2f} | {ratio['samples_forwarded_per_step']:.2f} | "
                     f"{r['network_alone']['cpu_ratio_2n_over_n']:.2f} |")
    return "\n".join(lines)


def accuracy_markdown(result: dict[str, Any]) -> str:
    """The ``## SMIA`` section: protocol, models and one row per eps and attack with every seed's numbers."""
    cfg, m = result["config"], result["machine"]
    seeds = [info["seed"] for info in result["models"]]
    lines = [
        f"`python bench/smia.py` ({m['date']}; CPU, one thread; torch {m['torch']}; accuracy only, no timing). "
        f"PneumoniaMNIST, a SmallCNN (3 conv-BN-ReLU stages, width {cfg['width']}, dropout 0.3) trained "
        f"{cfg['epochs']} epochs on the whole training split by `fit_classifier(balanced=True)` (class-weighted "
        "cross-entropy, AdamW, one-cycle; the epoch with the best validation balanced accuracy kept), one model per "
        f"seed; attacks on the first {result['n_test']} test images (624 = all), L-inf, {cfg['num_steps']} steps, "
        f"every attack at the same step size {cfg['step_factor']:g} x eps / {cfg['num_steps']} and the same start: "
        "BIM (= SMIA beta = 0) and SMIA without random start; PGD and SMIA beta = 1 from the same seeded random "
        f"start; SMIA sigma = {cfg['sigma']:g} px. Each cell: robust accuracy [95 % Wilson interval] (robust balanced "
        "accuracy); for SMIA, paired with its group's baseline on the same images: +a / -b = images fooled only by "
        "SMIA / only by the baseline, p = exact two-sided McNemar test. The 3D per-step cost is measured apart, on an "
        "idle machine: `python bench/smia.py --cost-only` (under 2 minutes; section `SMIA: 3D cost per step`).",
        "",
        "| seed | val balanced acc | test acc | test balanced acc |",
        "|---|---|---|---|",
        *(f"| {i['seed']} | {i['val_best']:.3f} | {i['test_acc']:.3f} | {i['test_balanced_acc']:.3f} |"
          for i in result["models"]),
        "",
        "| eps /255 | attack | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    by = {(r["eps_255"], r["attack"], r["seed"]): r for r in result["rows"]}
    for eps, name in dict.fromkeys((r["eps_255"], r["attack"]) for r in result["rows"]):
        cells = []
        for seed in seeds:
            r = by.get((eps, name, seed))
            if r is None:
                cells.append("-")
                continue
            lo, hi = r["robust_acc_ci95_wilson"]
            cell = f"{r['robust_acc']:.3f} [{lo:.2f}, {hi:.2f}] ({r['robust_balanced_acc']:.2f})"
            if "vs" in r:
                cell += f"; +{r['vs']['fooled_only_by_this']} / -{r['vs']['fooled_only_by_baseline']}, p = {r['vs']['mcnemar_p']:.2g}"
            cells.append(cell)
        lines.append(f"| {eps:g} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pneumoniamnist.npz")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/smia.json (smia_cost.json)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--step-factor", type=float, default=1.25, help="step size = factor * eps / num_steps, all attacks")
    parser.add_argument("--n-test", type=int, default=None, help="first n test images (default all 624)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cost-only", action="store_true", help="only the 3D per-step cost of SMIA over PGD")
    parser.add_argument("--cost-steps", type=int, default=6, help="--cost-only: steps of the longer run (>= 2)")
    parser.add_argument("--cost-repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="--cost-only: the device to time on")
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    parser.add_argument("--render", type=Path, default=None, help="rewrite the README section from a saved JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.render is not None:
        saved = json.loads(args.render.read_text())
        cost_run = "shapes" in saved
        text = cost_markdown(saved) if cost_run else accuracy_markdown(saved)
        replace_readme_section(BENCH_DIR / "README.md", "SMIA: 3D cost per step" if cost_run else "SMIA", text)
        print(text)
        return

    if args.cost_only:
        if args.cost_steps < 2:
            parser.error(f"--cost-steps must be >= 2, got {args.cost_steps}")
        result = cost(args)
        write_json(args.out or BENCH_DIR / "results" / "smia_cost.json", result)
        if not args.no_readme:
            replace_readme_section(BENCH_DIR / "README.md", "SMIA: 3D cost per step", cost_markdown(result))
        return

    data = load(args.data)
    models, rows = [], []
    for seed in args.seeds:
        net, model_info = train(data, args.epochs, args.width, seed)
        models.append(model_info)
        print(f"seed {seed}: test acc {model_info['test_acc']:.4f}, balanced {model_info['test_balanced_acc']:.4f} "
              f"(val balanced {model_info['val_best']:.4f})", flush=True)
        x, y = data["test_x"][: args.n_test], data["test_y"][: args.n_test]
        rows += attack_seed(net, x, y, args, seed)

    result = {
        "benchmark": "SMIA vs PGD/BIM at equal step size, start and steps, PneumoniaMNIST test split, L-inf",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
        "n_test": int(len(data["test_y"][: args.n_test])),
        "models": models,
        "rows": rows,
        "platform": platform.platform(),
    }
    write_json(args.out or BENCH_DIR / "results" / "smia.json", result)
    if not args.no_readme:
        replace_readme_section(BENCH_DIR / "README.md", "SMIA", accuracy_markdown(result))
    print(accuracy_markdown(result))


if __name__ == "__main__":
    main()
