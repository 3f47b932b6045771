# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""SMIA vs PGD/BIM on PneumoniaMNIST: robust accuracy and how smooth / stable the perturbations are.

Trains a small CNN on the train split (class-balanced loss, last epoch kept), then attacks the whole test split at
eps in {1, 2, 4}/255 (L-inf, 10 steps). Every attack runs at the same step size (``--step-factor`` x eps / steps,
default BIM's 1.25) and number of steps, so that only the objective differs: without random start BIM (= SMIA with
beta = 0) and SMIA with several beta, smoothing the adversarial image (``smoothing="image"``, the default) or only the
perturbation; with the same seeded random start PGD and SMIA beta = 1. For each it
reports robust accuracy, the stabilization KL terms, and the smoothness of δ: total variation (mean absolute
difference between neighbouring pixels, in units of eps) and the fraction of δ's energy above 0.25 cycles/pixel.

Run from the repository root (CPU, one thread, about 2-4 minutes)::

    python bench/smia.py --data ../shared/data/pneumoniamnist.npz --out bench/results/smia.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from monai_robust.attacks.pgd import BIM, PGD
from monai_robust.attacks.smia import SMIA
from monai_robust.data import MEDMNIST_SPLITS, medmnist_tensors
from monai_robust.networks import SmallCNN

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path) -> dict[str, torch.Tensor]:
    """The three splits as float images in [0, 1] ``(N, 1, 28, 28)`` and labels ``(N,)``."""
    tensors = {split: medmnist_tensors(path, split) for split in MEDMNIST_SPLITS}
    return {f"{split}_{k}": t[i] for split, t in tensors.items() for i, k in enumerate("xy")}


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def train(data: dict[str, torch.Tensor], epochs: int, width: int, seed: int) -> tuple[nn.Module, dict]:
    """Adam with a one-cycle schedule, class-balanced cross-entropy and random 2-pixel shifts; the last epoch is
    kept (the test split is shifted from train/val, so picking the best val epoch does not help it)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(channels=(width, 2 * width, 2 * width), norm="batch", dropout=0.3)
    x, y, bs = data["train_x"], data["train_y"], 64
    weight = len(y) / (2 * torch.bincount(y, minlength=2).float())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(x) + bs - 1) // bs))
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for k in range(0, len(x), bs):
            idx = perm[k : k + bs]
            i, j = torch.randint(0, 5, (2,), generator=g).tolist()
            xb = F.pad(x[idx], (2, 2, 2, 2), mode="replicate")[:, :, i : i + 28, j : j + 28]
            opt.zero_grad()
            F.cross_entropy(net(xb), y[idx], weight=weight).backward()
            opt.step()
            sched.step()
    net.eval()
    info = {
        "arch": f"3 conv-BN-ReLU blocks, width {width}", "epochs": epochs, "train_s": time.perf_counter() - t0,
        "val_acc": accuracy(net, data["val_x"], data["val_y"]), "test_acc": accuracy(net, data["test_x"], data["test_y"]),
    }
    return net, info


def smoothness(delta: torch.Tensor, eps: float) -> dict[str, float]:
    """Total variation per pixel (in units of eps) and high-frequency energy fraction of δ (N, 1, H, W)."""
    tv = (delta.diff(dim=-1).abs().mean(dim=(1, 2, 3)) + delta.diff(dim=-2).abs().mean(dim=(1, 2, 3))) / eps
    power = torch.fft.fft2(delta).abs().pow(2)
    fy = torch.fft.fftfreq(delta.shape[-2]).reshape(-1, 1)
    fx = torch.fft.fftfreq(delta.shape[-1]).reshape(1, -1)
    high = (fy.pow(2) + fx.pow(2)).sqrt() > 0.25
    hf = (power * high).sum(dim=(1, 2, 3)) / power.sum(dim=(1, 2, 3)).clamp_min(1e-20)
    return {"tv_per_px_over_eps": float(tv.mean()), "hf_energy_frac": float(hf.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pneumoniamnist.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "smia.json")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--step-factor", type=float, default=1.25, help="step size = factor * eps / num_steps, all attacks")
    parser.add_argument("--n-test", type=int, default=None, help="first n test images (default all 624)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load(args.data)
    net, model_info = train(data, args.epochs, args.width, args.seed)
    print(f"model: test acc {model_info['test_acc']:.4f} (val {model_info['val_acc']:.4f}), "
          f"{model_info['train_s']:.0f} s")
    x, y = data["test_x"][: args.n_test], data["test_y"][: args.n_test]
    with torch.no_grad():
        clean_pred_ok = net(x).argmax(1) == y
    probe_img = SMIA(net, 0.0, sigma=args.sigma, bounds=(0.0, 1.0))
    probe_pert = SMIA(net, 0.0, sigma=args.sigma, smoothing="perturbation", bounds=(0.0, 1.0))
    clean_kl = float(probe_img.stabilization(x).mean())

    rows = []
    for eps_255 in (1, 2, 4):
        eps = eps_255 / 255
        # equal step size, start and steps for every attack: only beta (and the smoothing) differ within a group
        common = {"num_steps": args.num_steps, "bounds": (0.0, 1.0), "step_size": args.step_factor * eps / args.num_steps}
        smia_kw = {**common, "sigma": args.sigma}
        attacks = {
            "BIM": BIM(net, eps, **common),
            "SMIA b=1": SMIA(net, eps, beta=1.0, **smia_kw),
            "SMIA b=10": SMIA(net, eps, beta=10.0, **smia_kw),
            "SMIA-pert b=10": SMIA(net, eps, beta=10.0, smoothing="perturbation", **smia_kw),
            "PGD (random start)": PGD(net, eps, **common),  # same seed below: the same random start as SMIA's
            "SMIA b=1 (random start)": SMIA(net, eps, beta=1.0, random_start=True, **smia_kw),
        }
        for name, attack in attacks.items():
            attack.set_random_state(args.seed)
            t0 = time.perf_counter()
            adv = attack(x, y)
            seconds = time.perf_counter() - t0
            delta = adv - x
            with torch.no_grad():
                fooled = net(adv).argmax(1) != y
            row = {
                "eps_255": eps_255,
                "attack": name,
                "robust_acc": float((~fooled).float().mean()),
                "success_on_correct": float(fooled[clean_pred_ok].float().mean()),
                "kl_smoothed_image": float(probe_img.stabilization(adv).mean()),
                "kl_smoothed_delta": float(probe_pert.stabilization(adv, clean=x).mean()),
                "mean_abs_delta_over_eps": float(delta.abs().mean() / eps),
                **smoothness(delta, eps),
                "seconds": seconds,
                "repr": repr(attack),
            }
            rows.append(row)
            print(
                f"eps {eps_255}/255 {name:15s} robust acc {row['robust_acc']:.3f}  KL(img) {row['kl_smoothed_image']:.4f}"
                f"  KL(delta) {row['kl_smoothed_delta']:.4f}  TV/eps {row['tv_per_px_over_eps']:.3f}"
                f"  HF {row['hf_energy_frac']:.3f}  |d|/eps {row['mean_abs_delta_over_eps']:.3f}  {seconds:.1f}s"
            )

    result = {
        "benchmark": "SMIA vs PGD/BIM at equal step size, start and steps, PneumoniaMNIST test split, L-inf",
        "step_factor": args.step_factor,
        "data": str(args.data),
        "n_test": int(len(y)),
        "model": model_info,
        "clean_kl_smoothed_image": clean_kl,
        "sigma": args.sigma,
        "kernel_size": probe_img.kernel_size,
        "rows": rows,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
