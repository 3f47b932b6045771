# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Universal adversarial perturbations: monai_robust vs ART's ``UniversalPerturbation`` and
``TargetedUniversalPerturbation``, same model, same fitting images, same budget, in one run.

The model is the PneumoniaMNIST CNN of ``tutorials/uap_pneumoniamnist.py``: the package's ``SmallCNN`` (channels
32, 64, 64, no norm, dropout 0.2) trained 6 epochs by ``fit_classifier`` with the same seed (trained here, or loaded
with ``--model-cache``). The UAPs are fitted on ``--num-fit`` training images at ζ = 4 % (L2:
``eps = 0.04 * mean ||x||_2`` of those images) and every tool stops at the same rule: a rate >= 0.8 on the fitting
images (ART's ``delta=0.2``) or ``--passes`` passes. ART runs with the FGSM inner attack of Hirano et al. (L2,
step eps / 10 as ours; ``targeted=True`` for the targeted attack) on a ``PyTorchClassifier`` with
``clip_values=(0, 1)``; ours runs ``SGDUAP`` (the default) and ``IterativeUAP`` (FGSM inner, step eps / 10,
minibatches of 32), each at its defaults (bf16 gradient steps where the CPU has native bf16, flags in the JSON;
channels-last on the CPU) and with fp32 steps (``amp=False``, rows "fp32"); every rate, the stopping rule included,
is decided in fp32. A second
non-targeted case (``--deepfool-passes``, default 1) runs ART's *default* inner attack, DeepFool with ART's
defaults (100 iterations, overshoot 1e-6), against ``IterativeUAP`` with the same DeepFool settings. All rates are
then measured by the same code (``evaluate_uap``) on the fitting images and on the test split.

Ours stops as soon as the exact (fp32) rate on the fitting images reaches the stopping rate, also within a pass;
ART checks after each pass. Rows "to ART's rate" stop at ART's final rate: the time to an equal rate. Every fit of
ours has to measure that rate exactly at least once, one forward pass over the fitting images: its CPU time
(``check_s`` in the JSON) bounds the speed-up any such fitter can reach (``art_cpu_s / check_s``, column "bound").

Times are the minimum over ``--repeats`` runs of wall-clock and process-CPU seconds, one thread. On a shared machine
the CPU time is the robust measure (other processes stretch the wall clock, not this process's CPU time).

Run from the repository root::

    python bench/universal.py [--data-dir ../shared/data] [--out bench/results/universal.json]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, MinTimer, machine_info, replace_readme_section, write_json  # noqa: E402

from monai_robust.attacks.fixed_perturbation import evaluate_uap  # noqa: E402
from monai_robust.attacks.layout import channels_last  # noqa: E402
from monai_robust.attacks.precision import cpu_bf16_flags  # noqa: E402
from monai_robust.attacks.universal import SGDUAP, IterativeUAP  # noqa: E402
from monai_robust.data import medmnist_tensors  # noqa: E402
from monai_robust.engines.fit import classification_accuracy, fit_classifier  # noqa: E402
from monai_robust.networks import SmallCNN  # noqa: E402

ROOT = BENCH_DIR.parent
BOUNDS = (0.0, 1.0)
STOP = 0.8  # ART's delta = 0.2
# per inner attack: its name in the tables, ART's attacker_params (from the UAP eps), IterativeUAP's keywords
INNER = {
    "fgsm": ("FGSM", lambda eps: {"eps": eps / 10, "norm": 2}, {}),
    "deepfool": ("DeepFool", lambda eps: {"verbose": False}, {"inner": "deepfool", "inner_steps": 100, "overshoot": 1e-6}),
}
PRECISIONS = {"": {}, ", fp32": {"amp": False}}  # row suffix: the fitters' keywords (DeepFool inner: fp32 only)


def _art_classifier(net: torch.nn.Module) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(net, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=2,
                             clip_values=BOUNDS, device_type="gpu" if next(net.parameters()).is_cuda else "cpu")


def _art_run(net: torch.nn.Module, x: np.ndarray, eps: float, passes: int, target: int | None,
             inner: str = "fgsm", seed: int = 0) -> np.ndarray:
    from art.attacks.evasion import TargetedUniversalPerturbation, UniversalPerturbation

    clf = _art_classifier(net)
    random.seed(seed)  # ART shuffles the fitting images with Python's random module
    if target is None:
        attack = UniversalPerturbation(clf, attacker=inner, attacker_params=INNER[inner][1](eps),
                                       delta=1 - STOP, max_iter=passes, eps=eps, norm=2, batch_size=32, verbose=False)
        attack.generate(x)
    else:
        attack = TargetedUniversalPerturbation(clf, attacker="fgsm",
                                               attacker_params={"eps": eps / 10, "norm": 2, "targeted": True},
                                               delta=1 - STOP, max_iter=passes, eps=eps, norm=2)
        y = np.zeros((len(x), 2), dtype=np.float32)
        y[:, target] = 1
        attack.generate(x, y=y)
    return np.asarray(attack.noise)[0]


def _rates(net: torch.nn.Module, delta: Any, fit_x: torch.Tensor, test_x: torch.Tensor, target: int | None) -> dict:
    key = "fooling_rate" if target is None else "targeted_success_rate"
    d = torch.as_tensor(delta, dtype=torch.float32)
    return {
        "fit_rate": evaluate_uap(net, d, fit_x, bounds=BOUNDS, target=target)[key],
        "test_rate": evaluate_uap(net, d, test_x, bounds=BOUNDS, target=target)[key],
        "delta_l2": float(d.norm()),
    }


def run_case(net: torch.nn.Module, fit_x: torch.Tensor, test_x: torch.Tensor, eps: float, passes: int,
             repeats: int, art_repeats: int, seed: int, target: int | None, inner: str = "fgsm") -> list[dict]:
    """ART, then ours with the same stopping rule (rate >= STOP or ``passes``), then ours stopping as soon as the
    rate on the fitting images reaches ART's (the time to an equal rate). ``inner`` is ART's and IterativeUAP's
    inner attack: ``"fgsm"`` (L2, step eps / 10) or ``"deepfool"`` (ART's default: 100 iterations, overshoot 1e-6)."""
    timer, results = MinTimer(), {}
    inner_name, _, iterative = INNER[inner]
    case = ("non-targeted" if target is None else f"targeted -> {target}") + ("" if inner == "fgsm" else f", {inner_name} inner")

    def ours(cls: type, stop: float, precision: dict) -> torch.Tensor:
        kw = {**(iterative if cls is IterativeUAP else {}), **precision}
        fitter = cls(net, eps, lp=2, bounds=BOUNDS, target=target, max_passes=passes, target_rate=stop, **kw)
        return fitter.set_random_state(seed).fit(fit_x).delta

    def record(name: str, fn: Any, n: int, stop_rule: str) -> None:
        for _ in range(n):
            delta = timer.time(name, fn)
        results[name] = {"wall_s": timer.best[name], "cpu_s": timer.best_cpu[name],
                         **_rates(net, delta, fit_x, test_x, target), "stop_rule": stop_rule}
        print(case, name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()}, flush=True)

    record("ART", lambda: _art_run(net, fit_x.numpy(), eps, passes, target, inner, seed), art_repeats, f">={STOP}")
    art = results["ART"]
    label = f"IterativeUAP ({inner_name})"
    fitters = [(f"SGDUAP{suffix}", SGDUAP, kw) for suffix, kw in PRECISIONS.items()]
    fitters += [(f"{label}{suffix}", IterativeUAP, kw) for suffix, kw in PRECISIONS.items() if inner == "fgsm" or not kw]
    slow = 1 if inner == "deepfool" else repeats  # IterativeUAP with DeepFool inside: about 15 CPU-s a pass, once
    for name, cls, kw in fitters:
        record(name, lambda c=cls, k=kw: ours(c, STOP, k), repeats if cls is SGDUAP else slow, f">={STOP}")
    stop = max(art["fit_rate"], 1e-6)
    for name, cls, kw in fitters:
        record(f"{name}, to ART's rate", lambda c=cls, k=kw: ours(c, stop, k), repeats if cls is SGDUAP else slow,
               f">={stop:.3f} (ART's)")
    check_s = _check_seconds(net, fit_x, repeats)
    rows = []
    for name, r in results.items():
        row = {"case": case, "tool": name, **r}
        if name == "ART":
            row["check_s"] = check_s
            row["speedup_bound_cpu"] = art["cpu_s"] / check_s
        else:
            row["speedup_wall_vs_art"] = art["wall_s"] / r["wall_s"]
            row["speedup_cpu_vs_art"] = art["cpu_s"] / r["cpu_s"]
            row["fit_rate_ge_art"] = r["fit_rate"] >= art["fit_rate"]
            row["test_rate_ge_art"] = r["test_rate"] >= art["test_rate"]
        rows.append(row)
    return rows


def _check_seconds(net: torch.nn.Module, fit_x: torch.Tensor, repeats: int) -> float:
    """CPU seconds of one exact (fp32) pass over the fitting images as a fit of ours makes its rate check (chunks of
    128, channels-last on the CPU as the fitters' default): the least time a fitter that stops on the exact rate
    spends."""
    device = next(net.parameters()).device
    timer = MinTimer()

    def check() -> None:
        for i in range(0, len(fit_x), 128):
            net(fit_x[i : i + 128].to(device).clamp(*BOUNDS)).argmax(1)

    with torch.no_grad(), channels_last(net.eval(), fit_x.ndim if device.type == "cpu" else 0):
        for _ in range(max(repeats, 1)):
            timer.time("check", check)
    return timer.best_cpu["check"]


def markdown(payload: dict) -> str:
    s = payload["setup"]
    lines = [
        f"`python bench/universal.py` ({payload['machine']['date']}, {payload['machine']['cpu']}, 1 thread, load "
        f"{payload['machine'].get('load_avg_1min_at_start')} at start). PneumoniaMNIST CNN (test accuracy "
        f"{s['model_test_acc']:.3f}); UAPs fitted on {s['num_fit']} training images at zeta = 4 % L2 "
        f"(eps = {s['eps']:.3f}); every tool stops at rate >= {STOP} on the fitting images or {s['passes']} passes; "
        "ART and IterativeUAP with the FGSM inner attack (L2 step eps / 10) of Hirano et al."
        + (f"; in the \"DeepFool inner\" case with ART's default inner attack (DeepFool with ART's defaults: 100 "
           f"iterations, overshoot 1e-6; ours the same) for {s['deepfool_passes']} passes"
           if s.get("deepfool_passes") else "")
        + ". Rates are measured by the same code; "
        f"times are the minimum over repeats (ART {s['art_repeats']}, ours {s['repeats']}; IterativeUAP with DeepFool 1).",
        "",
        "| case | tool | stops at | wall s | CPU s | fit rate | test rate | speed-up vs ART (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        if r["tool"] == "ART":
            sp = f"bound {r['speedup_bound_cpu']:.1f}x (one exact check: {r['check_s']:.3f} CPU-s)"
        else:
            sp = f"{r['speedup_wall_vs_art']:.1f}x / {r['speedup_cpu_vs_art']:.1f}x"
        lines.append(f"| {r['case']} | {r['tool']} | {r['stop_rule']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['fit_rate']:.3f} | {r['test_rate']:.3f} | {sp} |")
    lines += ["", "Rate: fooling rate (non-targeted) or targeted success rate, on the fitting images (fit) and the "
              f"{payload['setup']['num_test']} test images (test). Rows \"to ART's rate\" stop as soon as the rate on "
              "the fitting images reaches ART's final rate (time to an equal rate); ours checks it within a pass, "
              "ART after each pass. Ours at its defaults: gradient steps under bf16 autocast where the CPU has native bf16 "
              f"(here: {', '.join(payload['setup']['cpu_bf16_flags']) or 'none, so fp32'}), every rate in fp32; "
              "\"fp32\": fp32 steps. "
              "Bound: ART's CPU time over one exact rate check on the fitting images (a forward pass over them, "
              "which every fit of ours makes at least once). Raw numbers: `bench/results/universal.json`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "universal.json")
    p.add_argument("--readme", type=Path, default=BENCH_DIR / "README.md")
    p.add_argument("--model-cache", type=Path, default=None, help="load/save the trained CNN's state_dict here")
    p.add_argument("--num-fit", type=int, default=1000)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--deepfool-passes", type=int, default=1,
                   help="passes of the case with ART's default inner attack (DeepFool, about 2 CPU-minutes a pass)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--art-repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device of the model (cuda for the GPU comparison)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("art").setLevel(logging.ERROR)
    npz = args.data_dir / "pneumoniamnist.npz"
    train, val, test = ([t.to(args.device) for t in medmnist_tensors(npz, split)] for split in ("train", "val", "test"))
    torch.manual_seed(args.seed)  # as the tutorial: the initial weights and the shuffling
    net = SmallCNN(channels=(32, 64, 64), norm=None, dropout=0.2).to(args.device)  # trained where it runs
    if args.model_cache is not None and args.model_cache.is_file():
        net.load_state_dict(torch.load(args.model_cache, map_location=args.device, weights_only=True))
    else:
        fit_classifier(net, train, val, epochs=6)
        if args.model_cache is not None:
            torch.save(net.state_dict(), args.model_cache)
    info = {"test_acc": classification_accuracy(net.eval(), *test)}
    # ART and ours run where the model is; the images stay on the CPU and are moved
    fit_x, test_x = train[0][: args.num_fit].cpu(), test[0].cpu()
    eps = 0.04 * float(fit_x.flatten(1).norm(dim=1).mean())
    payload = {
        "machine": machine_info(),
        "setup": {"model_test_acc": info["test_acc"], "device": args.device, "num_fit": len(fit_x), "num_test": len(test_x),
                  "zeta": 0.04, "lp": 2, "eps": eps, "cpu_bf16_flags": list(cpu_bf16_flags()),
                  "passes": args.passes, "stop_rate": STOP, "repeats": args.repeats, "art_repeats": args.art_repeats,
                  "art_inner": "fgsm (L2, step = UAP eps / 10, as IterativeUAP)", "ours_batch_size": {"SGDUAP": 16, "IterativeUAP": 32}, "sgduap_step": "eps / 6, x0.8 per pass",
                  "ours_layout": "channels-last on the CPU (the fitters' default for 2D images)",
                  "deepfool_passes": args.deepfool_passes,
                  "deepfool_inner": "ART's defaults (100 iterations, overshoot 1e-6, 10 class gradients); ours the same"},
    }
    cases = [(None, "fgsm", args.passes), (0, "fgsm", args.passes), (1, "fgsm", args.passes)]
    cases += [(None, "deepfool", args.deepfool_passes)] if args.deepfool_passes > 0 else []
    payload["results"] = [
        row
        for target, inner, passes in cases
        for row in run_case(net, fit_x, test_x, eps, passes, args.repeats, args.art_repeats, args.seed, target, inner)
    ]
    write_json(args.out, payload)
    replace_readme_section(args.readme, "Universal perturbations", markdown(payload))
    return payload


if __name__ == "__main__":
    main()
