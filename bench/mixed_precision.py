# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Is mixed precision safe for evaluation? Robust accuracy of each attack in fp32 and in mixed precision (bf16
iterations, fp32 check and refinement), same seeds, on briefly trained PneumoniaMNIST networks (issue 19 item 1).

Networks: the bench's SmallCNN (28x28, the hardening tutorial's model), MONAI DenseNet121-2D on the images
upsampled to 64x64 and MONAI ResNet18-2D on the images upsampled to 128x128 (bench/attacks.py's shapes), each
trained from a fixed seed (weights cached in ``--weights``). Attacks: FGSM, BIM, PGD L-inf, PGD L2, APGD L-inf and
AutoAttack (reduced budget), each run on the same test images with the same seed in both precisions; with
``--seed-baseline`` the attacks with a random start run in fp32 with a second seed too, to show how much two fp32
runs disagree. The target is ``|robust accuracy (mixed) - robust accuracy (fp32)| <= 0.005``. Per row the JSON keeps
the fp32 margins (true logit minus the largest other) of every image at both returned examples. Accuracy only: no
timings (see bench/attacks.py). Writes ``bench/results/mixed_precision.json`` (after each row) and the
``## Mixed precision`` section of ``bench/README.md``.

Usage::

    python bench/mixed_precision.py                               # both networks, 512 test images
    python bench/mixed_precision.py --nets smallcnn --n 64 --steps 2 --train-images 256   # a smoke run
    python bench/mixed_precision.py --nets smallcnn --attacks apgd autoattack                # some attacks only
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_networks import load_split  # noqa: E402

NPZ = Path("/work/shared/data/pneumoniamnist.npz")
NETS = {"smallcnn": (28, 64, 3), "densenet121_2d": (64, 32, 1), "resnet18_2d": (128, 16, 1),
        "densenet121_3d": (32, 16, 4)}  # size, training batch, epochs
HELD_OUT_3D = 512
"""DenseNet121-3D runs on AdrenalMNIST3D's 4-class rotation task (``bench/_real_networks.py``): the split has only 396
non-training volumes (val 98 + test 298), so the last ``HELD_OUT_3D - 396`` training volumes are held out too."""
ATTACKS = ("fgsm", "bim", "pgd-linf", "pgd-l2", "apgd", "autoattack")
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
    from monai.networks.nets import DenseNet121, resnet18

    if name == "resnet18_2d":
        return resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    if name == "densenet121_3d":
        return DenseNet121(spatial_dims=3, in_channels=1, out_channels=4)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)


def dataset(name: str, npz: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``part`` (``"train"`` or ``"attacked"``) images and labels of network ``name``: PneumoniaMNIST's train or
    test split at the network's size; for DenseNet121-3D the AdrenalMNIST3D rotation task, whose attacked set is
    test + val + the last training volumes (:data:`HELD_OUT_3D`)."""
    if name != "densenet121_3d":
        return _images(npz, "train" if part == "train" else "test", NETS[name][0])
    x, y = load_split("densenet3d", "train", data_dir=npz.parent)
    held = [load_split("densenet3d", split, data_dir=npz.parent) for split in ("test", "val")]
    extra = HELD_OUT_3D - sum(len(labels) for _, labels in held)
    if part == "train":
        return x[:-extra], y[:-extra]
    held.append((x[-extra:], y[-extra:]))
    return torch.cat([v for v, _ in held]), torch.cat([labels for _, labels in held])


def trained(name: str, npz: Path, weights: Path, train_images: int | None) -> torch.nn.Module:
    """``name`` trained briefly (Adam 1e-3, fixed seeds) on its training set (:func:`dataset`); cached in ``weights``."""
    size, batch, epochs = NETS[name]
    net = build(name)
    path = weights / f"{name}_{train_images or 'all'}.pt"
    if path.is_file():
        net.load_state_dict(torch.load(path))
        return net.eval()
    x, y = dataset(name, npz, "train")
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


def attacks(
    net: torch.nn.Module, eps_inf: float, eps_l2: float, steps: int, queries: int, which: tuple[str, ...] = ATTACKS
) -> dict[str, tuple[str, Any, bool]]:
    """The attacks of issue 19 (``which`` of :data:`ATTACKS`, in that order) with the library's default step sizes: name ->
    (key, attack, whether it has a random start); the AutoAttack ensemble with ``steps`` iterations and ``queries`` Square queries
    when ``queries > 0``."""
    b = (0.0, 1.0)
    table = {
        "fgsm": ("FGSM", lambda: FGSM(net, eps_inf, bounds=b), False),
        "bim": (f"BIM-{steps}", lambda: BIM(net, eps_inf, num_steps=steps, bounds=b), False),
        "pgd-linf": (f"PGD-{steps}-Linf", lambda: PGD(net, eps_inf, num_steps=steps, bounds=b), True),
        "pgd-l2": (f"PGD-{steps}-L2", lambda: PGD(net, eps_l2, lp=2, num_steps=steps, bounds=b), True),
        "apgd": (f"APGD-{steps}-Linf", lambda: APGD(net, eps_inf, num_steps=steps, bounds=b), True),
        "autoattack": (f"AutoAttack-{steps}-Linf (Square {queries})",
                       lambda: AutoAttack(net, eps_inf, num_steps=steps, num_queries=queries, bounds=b), True),
    }
    return {table[k][0]: (k, table[k][1](), table[k][2]) for k in which if k != "autoattack" or queries > 0}


def _margin(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """fp32 margin per image: true logit minus the largest other (> 0: correctly classified)."""
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        z = net(x).float()
    true = z.gather(1, y[:, None]).squeeze(1)
    return true - z.scatter(1, y[:, None], float("-inf")).amax(1)


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


def _run_mode(attack: Any, x: torch.Tensor, y: torch.Tensor, batch: int, amp: bool, seed: int, name: str) -> dict:
    """One precision of one attack over all images: per-image fp32 margins at the returned examples, and the
    fp32 check's counts in mixed precision."""
    attack.set_random_state(seed)  # the same seed for every batch in both precisions
    margins, refined, checked, disagree, start = [], 0, 0, 0, time.perf_counter()
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        adv = attack(xb, yb, amp=amp)
        margins.append(_margin(attack.network, adv, yb))
        if amp:
            report = attack.last_precision
            refined, checked = refined + report.refined, checked + report.checked
            disagree += int((report.success != (margins[-1] <= 0)).sum())  # fp32 at another batch size: ~0
    margin = torch.cat(margins)
    print(f"  {name} {'mixed' if amp else 'fp32'} seed {seed}: {time.perf_counter() - start:.0f} s wall (planning only)",
          file=sys.stderr, flush=True)
    return {"correct": margin > 0, "margin": margin, "refined": refined, "checked": checked, "disagree": disagree}


def run_net(name: str, args: argparse.Namespace, emit: Any = None) -> list[dict]:
    net = trained(name, args.npz, args.weights, args.train_images)
    for p in net.parameters():
        p.requires_grad_(False)
    x, y = dataset(name, args.npz, "attacked")
    x, y = x[: args.n], y[: args.n]
    clean = torch.cat([_correct(net, x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)])
    rows = []
    for attack_name, (key, attack, random) in attacks(net, args.eps_inf, args.eps_l2, args.steps, args.queries,
                                                 tuple(args.attacks)).items():
        res = {mode: _run_mode(attack, x, y, args.batch, mode == "mixed", 0, attack_name) for mode in ("fp32", "mixed")}
        correct = {m: r["correct"] for m, r in res.items()}
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
            "refined": res["mixed"]["refined"], "checked": res["mixed"]["checked"],
            "report_disagrees_with_fp32_forward": res["mixed"]["disagree"],
            "within_target": abs(mixed - fp32) <= TARGET,
            "margins_fp32": [round(float(v), 4) for v in res["fp32"]["margin"]],
            "margins_mixed": [round(float(v), 4) for v in res["mixed"]["margin"]],
        }
        if args.seed_baseline is not None and random and (not args.seed_baseline or key in args.seed_baseline):
            other = _run_mode(attack, x, y, args.batch, False, 1, attack_name)["correct"]
            row |= {"robust_acc_fp32_seed1": float(other.float().mean()),
                    "only_seed0_broke": int((other & ~correct["fp32"]).sum()),
                    "only_seed1_broke": int((correct["fp32"] & ~other).sum())}
        print(f"[{name}] {attack_name}: fp32 {fp32:.4f} mixed {mixed:.4f} (n={n}, only fp32 {row['only_fp32_broke']}, "
              f"only mixed {row['only_mixed_broke']})", file=sys.stderr, flush=True)
        rows.append(row)
        if emit is not None:
            emit(row)
    return rows


def _settings_line(payload: dict) -> str:
    s, m = payload["settings"], payload["machine"]
    nets = sorted({r["net"] for r in payload["results"]})
    train = f"{s['train_images']} training images per epoch" if s.get("train_images") else "all training images"
    return (f"{', '.join(nets)}: {s['steps']} steps, L-inf eps {s['eps_inf'] * 255:g}/255, L2 eps {s['eps_l2']:g}, "
            f"n = {s['n']}, weights trained on {train}; measured {m['date']}, load {m.get('load_avg_1min_at_start')} "
            f"at start; `{s['command'].strip()}`.")


def _findings(rows: list[dict]) -> list[str]:
    """Sentences computed from the rows: which agree within the target, the direction of the differences, and
    the fp32 margins of the images that differ."""
    out = []
    bad = [r for r in rows if not r["within_target"]]
    out.append(f"{len(rows) - len(bad)} of {len(rows)} rows within ±{TARGET}" + (
        "; outside: " + ", ".join(f"{r['net']} {r['attack']} ({r['diff']:+.4f}, {r['only_fp32_broke']} / "
                                  f"{r['only_mixed_broke']})" for r in bad) if bad else "") + ".")
    weaker = sum(r["only_fp32_broke"] for r in rows)
    stronger = sum(r["only_mixed_broke"] for r in rows)
    out.append(f"Over all rows {weaker} image-attack pairs were broken only in fp32 and {stronger} only in mixed "
               "precision.")
    diffs = [(a, b) for r in rows if "margins_fp32" in r
             for a, b in zip(r["margins_fp32"], r["margins_mixed"]) if (a > 0) != (b > 0)]
    if diffs:
        small = float(np.median([min(abs(a), abs(b)) for a, b in diffs]))
        out.append(f"The {len(diffs)} images that differ sit close to the decision boundary in one of the two runs: "
                   f"median fp32 margin (true logit minus the largest other) {small:.3f} on the side nearer to it.")
    seeds = [r for r in rows if "robust_acc_fp32_seed1" in r]
    if seeds:
        out.append("Two fp32 runs with different seeds (random start) disagree as much: " + ", ".join(
            f"{r['net']} {r['attack']} {r['robust_acc_fp32_seed1'] - r['robust_acc_fp32']:+.4f} "
            f"({r['only_seed0_broke']} / {r['only_seed1_broke']})" for r in seeds) + ".")
    return out


def markdown(payloads: list[dict]) -> str:
    """The ``## Mixed precision`` section from one or more result payloads (e.g. one per network); a payload with
    only ``notes`` (e.g. ``bench/results/mixed_precision_notes.json``) adds its paragraph after the findings."""
    notes = [p["notes"] for p in payloads if p.get("notes")]
    payloads = [p for p in payloads if "results" in p]
    m, s = payloads[0]["machine"], payloads[0]["settings"]
    flags = ", ".join(s["cpu_bf16_flags"]) or "none"
    no_amx = "" if "amx_bf16" in s["cpu_bf16_flags"] else ", no amx_bf16"
    rows = [r for p in payloads for r in p["results"]]
    seeds = any("robust_acc_fp32_seed1" in r for r in rows)
    lines = [
        f"On {m['cpu']} (CPU flags {flags}{no_amx}; mixed = {s['dtype']} autocast iterations, fp32 end), torch "
        f"{m['torch']}, MONAI {m['monai']}, one thread. Mixed precision is opt-in: `amp=True` on an attack (or a "
        "call); the default is fp32 for every attack (`amp_by_default` is False throughout) and "
        "`MONAI_ROBUST_FP32=1` forces fp32 even with `amp=True`. In mixed precision the last ceil(steps / 5) "
        "iterations run in fp32 in place of bf16 ones (same number of forward and backward passes): PGD and BIM "
        "their last steps, APGD (and AutoAttack's APGD-CE and APGD-T) its last updates with its own step size, "
        "momentum and state; FGSM redoes its step in fp32 where the bf16 step did not break the image. Success, "
        "budget and bounds are decided in fp32. Default step sizes (PGD 2.5 eps / steps, BIM 1.25 eps / steps); "
        "`early_stop` off, as in `## Attacks`. The first n PneumoniaMNIST test images, the same seeds in both "
        "precisions; networks trained briefly from fixed seeds (SmallCNN 28x28: 3 epochs, Adam 1e-3; "
        "DenseNet121-2D on the images upsampled to 64x64 and ResNet18-2D on them upsampled to 128x128: 1 epoch, "
        "Adam 1e-3). DenseNet121-3D: AdrenalMNIST3D volumes upsampled to 32^3, the 4-class rotation task of "
        "`bench/evaluation.py` (label = rotation by a multiple of 90 degrees), 4 epochs on the first 1,072 training "
        f"volumes, attacked on {HELD_OUT_3D} held-out volumes (test 298, val 98, the last 116 training volumes). "
        "Robust accuracy is decided by the "
        "fp32 model; accuracy only, no timings (`## Attacks`). *only fp32 / only mixed* = images broken by one "
        "precision and not the other; *checked* = images whose result needed the fp32 check's forward pass"
        + ("; *fp32 seed 1* = the fp32 attack again with another seed (only seed 0 / only seed 1)." if seeds else "."),
        "",
        *[f"- {_settings_line(p)}" for p in payloads],
        "",
        "| net | attack | eps | n | clean acc | robust acc fp32 [95 % CI] | robust acc mixed [95 % CI] | diff | "
        "balanced fp32 / mixed | only fp32 / only mixed | checked | within ±0.005 |" + (" fp32 seed 1 |" if seeds else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if seeds else ""),
    ]
    for r in rows:
        ci_f, ci_m = r["ci95_fp32"], r["ci95_mixed"]
        seed = ""
        if seeds:
            seed = (f" {r['robust_acc_fp32_seed1']:.4f} ({r['only_seed0_broke']} / {r['only_seed1_broke']}) |"
                    if "robust_acc_fp32_seed1" in r else " — |")
        lines.append(
            f"| {r['net']} | {r['attack']} | {r.get('eps', '?')} | {r['n']} | {r['clean_acc']:.3f} | {r['robust_acc_fp32']:.4f} "
            f"[{ci_f[0]:.3f}, {ci_f[1]:.3f}] | {r['robust_acc_mixed']:.4f} [{ci_m[0]:.3f}, {ci_m[1]:.3f}] | "
            f"{r['diff']:+.4f} | {r['balanced_fp32']:.3f} / {r['balanced_mixed']:.3f} | {r['only_fp32_broke']} / "
            f"{r['only_mixed_broke']} | {r.get('checked', '?')} | {'yes' if r['within_target'] else 'NO'} |" + seed
        )
    lines += ["", "Findings (computed from the rows). " + " ".join(_findings(rows))]
    lines += [line for note in notes for line in ("", note)]
    lines += ["", "Regenerate: `python bench/mixed_precision.py` (`--nets`, `--attacks`, `--n`, `--steps`, `--eps-inf`, "
              "`--eps-l2`, `--seed-baseline`; `--render a.json b.json` rewrites this section from stored results)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["densenet121_2d", "smallcnn"])
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--seed-baseline", nargs="*", choices=ATTACKS, default=None,
                   help="also run these random-start attacks (all when none named) in fp32 with seed 1")
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
    payload = {"machine": machine_info(), "settings": settings, "results": results}
    for name in args.nets:
        run_net(name, args, emit=lambda row: (results.append(row), write_json(args.out, payload)))
    payload["settings"]["wall_s"] = time.perf_counter() - start
    write_json(args.out, payload)
    table = markdown([payload])
    if not args.no_readme:
        replace_readme_section(args.readme, "Mixed precision", table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
