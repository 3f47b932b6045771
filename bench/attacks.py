# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Attack speed side by side with torchattacks and ART, in one process, on MONAI networks with random weights.

For each model and attack it measures images/s of ``monai_robust``, torchattacks and ART, and the *floor*:
``k x`` one forward+backward with respect to the input (the least any ``k``-gradient attack can cost), measured
in the same run. Every timing is the minimum over ``--repeats`` (the machine may be shared); the libraries are
interleaved within each repeat so that they see the same load. Writes ``bench/results/attacks.json`` and the
``## Attacks`` section of ``bench/README.md``.

Targets (issue 3): FGSM / BIM / PGD / APGD within 1.05x the floor; CW and DeepFool >= 5x faster than ART's.
``ours`` runs in fp32 (``amp=False``); ``ours_mixed`` runs the same attack with the same seed in mixed precision
(bf16 iterations, fp32 check and refinement, issue 19), with its robust accuracy next to the fp32 one and the CPU's
native-bf16 flags in the table.

Usage::

    python bench/attacks.py                       # all models, spec sizes, 2 threads
    python bench/attacks.py --quick               # batch sizes / 4, one repeat: a smoke run
    python bench/attacks.py --models densenet121_2d --repeats 3 --attacks PGD-10-Linf APGD-10-Linf
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

try:  # python bench/attacks.py, or python -m bench.attacks
    from _common import BENCH_DIR, MinTimer, machine_info, replace_readme_section, write_json
except ImportError:  # pragma: no cover
    from bench._common import BENCH_DIR, MinTimer, machine_info, replace_readme_section, write_json

from monai_robust.attacks.precision import cpu_bf16_flags, low_precision_dtype

BOUNDS = (0.0, 1.0)
EPS_INF, EPS_L2 = 8 / 255, 1.0
CW_STEPS, CW_CONST, CW_LR = 10, 100.0, 0.01
DF_STEPS, DF_OVERSHOOT = 50, 0.02
LIBS = ("ours", "ours_mixed", "torchattacks", "art")
MIXED_TARGET = 0.005  # |robust accuracy mixed - fp32| (issue 19)
ART_B1_IMAGES = 8  # ART's CW and DeepFool default to batch_size=1: timed on this many images, reported per image


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[], torch.nn.Module]
    shape: tuple[int, ...]  # (N, C, *spatial)


def _models() -> dict[str, ModelSpec]:
    from monai.networks.nets import DenseNet121, resnet18

    return {
        "densenet121_2d": ModelSpec(lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), (32, 1, 64, 64)),
        "resnet18_2d": ModelSpec(lambda: resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), (16, 1, 128, 128)),
        "densenet121_3d": ModelSpec(
            lambda: DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), (8, 1, 32, 32, 32)
        ),
    }


@dataclass(frozen=True)
class AttackSpec:
    """One attack with the same settings in the three libraries; ``k`` gradient evaluations define its floor."""

    name: str
    k: int | None
    ours: Callable[[torch.nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    torchattacks: Callable[[torch.nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    art: Callable[[Any, int], Any]  # (ART classifier, batch size) -> ART attack
    minimal: bool = False  # minimal-perturbation attack: report success rate and median L2
    mixed: bool = False  # checked in fp32 after mixed-precision iterations: timed as ``ours_mixed`` too


def _ours(module: str, cls: str, **kw: Any) -> Callable[[torch.nn.Module], Any]:
    def make(net: torch.nn.Module) -> Any:
        attack_cls = getattr(importlib.import_module(f"monai_robust.attacks.{module}"), cls)
        return attack_cls(net, bounds=BOUNDS, **kw)

    return make


def _attacks() -> list[AttackSpec]:
    import torchattacks as ta
    from art.attacks import evasion as art

    inf, s_inf, s_l2 = np.inf, EPS_INF / 4, EPS_L2 / 4
    quiet = {"verbose": False}
    return [
        AttackSpec(
            "FGSM", 1,
            _ours("fgsm", "FGSM", eps=EPS_INF),
            lambda m: ta.FGSM(m, eps=EPS_INF),
            lambda c, b: art.FastGradientMethod(c, norm=inf, eps=EPS_INF, batch_size=b),
            mixed=True,
        ),
        AttackSpec(
            "BIM-10", 10,
            _ours("pgd", "BIM", eps=EPS_INF, step_size=s_inf, num_steps=10),
            lambda m: ta.BIM(m, eps=EPS_INF, alpha=s_inf, steps=10),
            lambda c, b: art.BasicIterativeMethod(c, eps=EPS_INF, eps_step=s_inf, max_iter=10, batch_size=b, **quiet),
            mixed=True,
        ),
        AttackSpec(
            "PGD-10-Linf", 10,
            _ours("pgd", "PGD", eps=EPS_INF, step_size=s_inf, num_steps=10),
            lambda m: ta.PGD(m, eps=EPS_INF, alpha=s_inf, steps=10, random_start=True),
            lambda c, b: art.ProjectedGradientDescent(
                c, norm=inf, eps=EPS_INF, eps_step=s_inf, max_iter=10, num_random_init=1, batch_size=b, **quiet
            ),
            mixed=True,
        ),
        AttackSpec(
            "PGD-10-L2", 10,
            _ours("pgd", "PGD", eps=EPS_L2, lp=2, step_size=s_l2, num_steps=10),
            lambda m: ta.PGDL2(m, eps=EPS_L2, alpha=s_l2, steps=10, random_start=True),
            lambda c, b: art.ProjectedGradientDescent(
                c, norm=2, eps=EPS_L2, eps_step=s_l2, max_iter=10, num_random_init=1, batch_size=b, **quiet
            ),
            mixed=True,
        ),
        AttackSpec(
            "APGD-10-Linf", 10,
            _ours("apgd", "APGD", eps=EPS_INF, num_steps=10),
            lambda m: ta.APGD(m, norm="Linf", eps=EPS_INF, steps=10, n_restarts=1),
            lambda c, b: art.AutoProjectedGradientDescent(
                c, norm=inf, eps=EPS_INF, eps_step=2 * EPS_INF, max_iter=10, nb_random_init=1, batch_size=b, **quiet
            ),
            mixed=True,
        ),
        AttackSpec(
            f"CW-{CW_STEPS}", CW_STEPS,
            _ours(
                "cw", "CW", num_steps=CW_STEPS, binary_search_steps=1, initial_const=CW_CONST, learning_rate=CW_LR,
                abort_early=False,
            ),
            lambda m: ta.CW(m, c=CW_CONST, kappa=0, steps=CW_STEPS, lr=CW_LR),
            lambda c, b: art.CarliniL2Method(
                c, learning_rate=CW_LR, binary_search_steps=1, max_iter=CW_STEPS, initial_const=CW_CONST, batch_size=b,
                **quiet,
            ),
            minimal=True,
        ),
        AttackSpec(
            "DeepFool", None,
            _ours("deepfool", "DeepFool", num_steps=DF_STEPS, overshoot=DF_OVERSHOOT),
            lambda m: ta.DeepFool(m, steps=DF_STEPS, overshoot=DF_OVERSHOOT),
            lambda c, b: art.DeepFool(c, max_iter=DF_STEPS, epsilon=DF_OVERSHOOT, nb_grads=2, batch_size=b, **quiet),
            minimal=True,
        ),
    ]


@dataclass(frozen=True)
class Setup:
    """Where and how the attacks run: device, autocast precision (``fp32``: off), channels-last memory format."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    def autocast(self) -> Any:
        """Autocast at this precision around every library's call and the floor (ours: ``attack.amp`` with the
        device's autocast dtype set to it, so the attack's own autocast region uses it)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        device_type = torch.device(self.device).type
        torch.set_autocast_dtype(device_type, self.dtype)
        return torch.autocast(device_type, dtype=self.dtype)

    def place(self, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
        net, x = net.to(self.device), x.to(self.device)
        if self.channels_last:
            fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            net, x = net.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        return net, x


def _floor_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward with respect to the input only: the unit every gradient attack pays per step."""
    xx = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(net(xx), y, reduction="sum"), xx)
    return grad


def _success_and_l2(net: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    adv = adv.to(x.device)
    with torch.no_grad():
        fooled = net(adv).argmax(1) != y
    l2 = (adv - x).flatten(1).norm(dim=1)[fooled]
    return float(fooled.float().mean()), float(l2.median()) if l2.numel() else math.nan


def _robust_acc(net: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        return float((net(adv.float()).argmax(1) == y).float().mean())


def run_model(
    name: str, spec: ModelSpec, attacks: list[AttackSpec], repeats: int, batch_div: int, libs: tuple[str, ...] = LIBS,
    setup: Setup = Setup(),
) -> list[dict]:
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    shape = (max(1, spec.shape[0] // batch_div),) + spec.shape[1:]
    g = torch.Generator().manual_seed(0)
    net, x = setup.place(spec.build().eval(), torch.rand(shape, generator=g))
    with torch.no_grad():
        y = net(x).argmax(1)  # the model's own predictions (fp32): every attack has to flip them
    x_np, y_np = x.float().cpu().numpy(), y.cpu().numpy()
    classifier = PyTorchClassifier(
        net, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(shape[1:]), nb_classes=2, clip_values=BOUNDS,
        device_type="gpu" if x.is_cuda else "cpu",
    )
    timer = MinTimer()
    frozen = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    with setup.autocast():
        _floor_step(net, x, y)  # warm-up
    for p, flag in frozen:
        p.requires_grad_(flag)

    built: dict[tuple[str, str], Any] = {}
    notes: dict[str, str] = {}
    quality: dict[tuple[str, str], tuple[float, float]] = {}
    robust: dict[tuple[str, str], float] = {}
    for r in range(repeats):
        for a in attacks:
            # the floor of each attack is its own k forward+backward passes, timed right before it: the same load
            # and the same number of samples (repeats) as the attack's time, so the minima compare fairly
            for p, _ in frozen:
                p.requires_grad_(False)
            with setup.autocast():
                timer.time(f"floor/{a.name}", lambda: _floor_step(net, x, y), per_call=a.k or 1)
            for p, flag in frozen:
                p.requires_grad_(flag)
            for lib in libs + (("art_b1",) if a.minimal and "art" in libs else ()):
                key = (a.name, lib)
                if lib == "ours_mixed" and not a.mixed:
                    continue
                if key in notes or (a.name, "*") in notes or (lib.startswith("art") and a.minimal and r > 0):
                    continue  # ART's CW and DeepFool take minutes: timed once
                try:
                    if key not in built:
                        factory = {"ours": a.ours, "ours_mixed": a.ours, "torchattacks": a.torchattacks}.get(lib)
                        built[key] = factory(net) if factory else a.art(classifier, 1 if lib == "art_b1" else shape[0])
                    if lib.startswith("ours"):
                        built[key].set_random_state(r)  # fp32 and mixed: the same seed
                        # ours: the setup's precision (fp32: amp=False); ours_mixed: exact mixed precision (issue 19)
                        built[key].amp = lib == "ours_mixed" or setup.dtype is not None
                    attack = built[key]
                    if lib == "art_b1":
                        xb, yb = x_np[:ART_B1_IMAGES], y_np[:ART_B1_IMAGES]
                        with setup.autocast():
                            timer.time(f"{a.name}/{lib}", lambda attack=attack, xb=xb, yb=yb: attack.generate(xb, yb))
                        continue
                    with setup.autocast():
                        if lib == "art":
                            out = timer.time(f"{a.name}/{lib}", lambda attack=attack: attack.generate(x_np, y_np))
                            adv = torch.from_numpy(out)
                        else:
                            adv = timer.time(f"{a.name}/{lib}", lambda attack=attack: attack(x, y))
                    for p, flag in frozen:  # ART / torchattacks may leave state behind; every library starts equal
                        p.requires_grad_(flag)
                        p.grad = None
                    net.eval()
                    if a.minimal and r == 0:
                        quality[key] = _success_and_l2(net, x, adv.float(), y)
                    if a.mixed and lib.startswith("ours") and r == 0:
                        robust[key] = _robust_acc(net, adv, y)
                except Exception as e:  # noqa: BLE001 - an attack of another helper may be missing or broken
                    where = "*" if lib == "ours" and isinstance(e, (ImportError, AttributeError)) else lib
                    notes[key if where == lib else (a.name, "*")] = f"{name} {a.name} / {lib}: {type(e).__name__}: {e}"
                    traceback.print_exc(limit=2, file=sys.stderr)
                    print(f"[{name}] skipped {a.name} / {lib}: {type(e).__name__}: {e}", file=sys.stderr)
            print(f"[{name}] repeat {r + 1}/{repeats} {a.name}: " + ", ".join(
                f"{lib} {timer.best.get(f'{a.name}/{lib}', math.nan):.2f}s" for lib in libs
            ) + f" (floor/step {timer.best[f'floor/{a.name}']:.3f}s)", file=sys.stderr, flush=True)

    rows = []
    for a in attacks:
        floor_wall, floor_cpu = timer.best[f"floor/{a.name}"], timer.best_cpu[f"floor/{a.name}"]
        row: dict[str, Any] = {
            "model": name, "input": list(shape), "attack": a.name, "k": a.k,
            "floor_step_wall_s": floor_wall, "floor_step_cpu_s": floor_cpu,
        }
        for lib in LIBS + ("art_b1",):
            key = f"{a.name}/{lib}"
            n_img = min(ART_B1_IMAGES, shape[0]) if lib == "art_b1" else shape[0]
            wall, cpu = timer.best.get(key), timer.best_cpu.get(key)
            row[f"{lib}_wall_s"], row[f"{lib}_cpu_s"], row[f"{lib}_images"] = wall, cpu, n_img
            row[f"{lib}_img_per_s"] = n_img / wall if wall else None
            row[f"{lib}_img_per_cpu_s"] = n_img / cpu if cpu else None
            row[f"{lib}_x_floor"] = cpu * shape[0] / n_img / (a.k * floor_cpu) if cpu and a.k else None
            row[f"{lib}_x_floor_wall"] = wall * shape[0] / n_img / (a.k * floor_wall) if wall and a.k else None
            row[f"{lib}_runs_wall_cpu_s"] = timer.runs.get(key, [])
            if (a.name, lib) in quality:
                row[f"{lib}_success"], row[f"{lib}_median_l2"] = quality[(a.name, lib)]
            if (a.name, lib) in robust:
                row[f"{lib}_robust_acc"] = robust[(a.name, lib)]
        ours, art = row["ours_cpu_s"], row["art_cpu_s"]
        row["speedup_vs_art"] = art / ours if ours and art else None
        ours, art = row["ours_wall_s"], row["art_wall_s"]
        row["speedup_vs_art_wall"] = art / ours if ours and art else None
        ours, art = row["ours_img_per_cpu_s"], row["art_b1_img_per_cpu_s"]
        row["speedup_vs_art_b1"] = ours / art if ours and art else None
        fp32, mixed = row.get("ours_robust_acc"), row.get("ours_mixed_robust_acc")
        row["mixed_acc_diff"] = mixed - fp32 if fp32 is not None and mixed is not None else None
        ours, mixed_cpu = row["ours_cpu_s"], row["ours_mixed_cpu_s"]
        row["mixed_speedup"] = ours / mixed_cpu if ours and mixed_cpu else None
        row["notes"] = [v for (n, _), v in notes.items() if n == a.name]
        rows.append(row)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _times(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}x"


def markdown(payload: dict) -> str:
    m, s = payload["machine"], payload["settings"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}, 1-min load "
        f"average {m.get('load_avg_1min_at_start', '?')} at start), Python {m['python']}, torch {m['torch']}, "
        f"MONAI {m['monai']}, torchattacks {m['torchattacks']}, ART {m['adversarial-robustness-toolbox']}; "
        f"GPU: {m['cuda'] or 'none'}. Command: `{s['command']}` ({s['wall_s']:.0f} s).",
        "",
        "MONAI networks with random weights (no downloads), inputs uniform in [0, 1], labels = the model's own "
        f"predictions. L-inf eps = 8/255, L2 eps = {EPS_L2:g}, step eps/4 (APGD: its own schedule); CW: "
        f"{CW_STEPS} Adam steps, one binary-search step, c = {CW_CONST:g}, lr = {CW_LR:g} (ours without abort-early); "
        f"DeepFool: up to {DF_STEPS} steps, overshoot {DF_OVERSHOOT:g}. Each time is the minimum over "
        f"{s['repeats']} repeat(s), the libraries ({', '.join(s.get('libs', LIBS))}) interleaved. Times are the process CPU seconds (with one "
        "thread the robust measure on a shared machine: other processes stretch the wall clock, not this CPU time; "
        "wall-clock times are in the JSON). *Floor* = k x one forward+backward w.r.t. the input (parameters "
        "frozen), timed right before each attack in every repeat; **x floor** = time / floor (CPU; *wall* = the same from wall-clock).",
        "ART's classifier takes the loss gradient with `loss.backward()`, so it also computes the parameters' "
        "gradients; torchattacks and ours take the input gradient only. APGD-10 is 10 forward+backward passes and one "
        "forward (the last iterate's value), as in Algorithm 1 of the paper; torchattacks' APGD adds one more of each. "
        "torchattacks' CW stops as soon as its batch loss rises (checked every step when steps = 10), so it runs "
        "fewer steps than the others. ART is given the whole batch (`batch_size` = N, its best case); ART's CW and "
        "DeepFool default to `batch_size=1`, timed on the first "
        f"{ART_B1_IMAGES} images (once) and compared per image in the last column.",
        "",
        "| model (input) | attack | k | ours img/CPU-s | ours x floor | ours x floor (wall) | torchattacks img/CPU-s "
        "| ta x floor | ART img/CPU-s | ART x floor | ours vs ART | ours vs ART batch_size=1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        inp = "x".join(str(v) for v in r["input"])
        lines.append(
            f"| {r['model']} ({inp}) | {r['attack']} | {r['k'] or '—'} | {_fmt(r['ours_img_per_cpu_s'], '.2f')} | "
            f"{_fmt(r['ours_x_floor'], '.3f')} | {_fmt(r['ours_x_floor_wall'], '.3f')} | "
            f"{_fmt(r['torchattacks_img_per_cpu_s'], '.2f')} | {_fmt(r['torchattacks_x_floor'], '.3f')} | "
            f"{_fmt(r['art_img_per_cpu_s'], '.2f')} | {_fmt(r['art_x_floor'], '.3f')} | "
            f"{_times(r['speedup_vs_art'])} | {_times(r.get('speedup_vs_art_b1'))} |"
        )
    minimal = [r for r in payload["results"] if "ours_success" in r or "art_success" in r]
    if minimal:
        lines += [
            "",
            "Minimal-perturbation attacks, same runs (success rate / median L2 of the successful perturbations):",
            "",
            "| model | attack | ours | torchattacks | ART |",
            "|---|---|---|---|---|",
        ]
        for r in minimal:
            cells = [
                f"{_fmt(r.get(f'{lib}_success'), '.2f')} / {_fmt(r.get(f'{lib}_median_l2'), '.3f')}"
                for lib in ("ours", "torchattacks", "art")
            ]
            lines.append(f"| {r['model']} | {r['attack']} | " + " | ".join(cells) + " |")
    mixed = [r for r in payload["results"] if r.get("mixed_acc_diff") is not None]
    if mixed:
        flags = ", ".join(m.get("cpu_bf16_flags") or []) or "none (bf16 emulated: expect no speed-up)"
        lines += [
            "",
            f"Mixed precision (issue 19), same runs and seeds: the iterations under {m.get('amp_dtype', 'bf16')} "
            f"autocast, success and the returned examples checked in fp32 and the samples not broken in fp32 given "
            f"fp32 steps. Native-bf16 CPU flags: {flags}. Robust accuracy on the n images of the batch (labels = "
            "the model's own predictions), decided by the fp32 model; the accuracy on trained networks with n >= "
            "512 is in `## Mixed precision`.",
            "",
            "| model | attack | n | fp32 x floor | mixed x floor | mixed speed-up | robust acc fp32 / mixed | "
            f"within ±{MIXED_TARGET} |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in mixed:
            ok = abs(r["mixed_acc_diff"]) <= MIXED_TARGET
            lines.append(
                f"| {r['model']} | {r['attack']} | {r['input'][0]} | {_fmt(r['ours_x_floor'], '.3f')} | "
                f"{_fmt(r['ours_mixed_x_floor'], '.3f')} | {_times(r['mixed_speedup'])} | "
                f"{r['ours_robust_acc']:.3f} / {r['ours_mixed_robust_acc']:.3f} | {'yes' if ok else 'NO'} |"
            )
    notes = sorted({n for r in payload["results"] for n in r["notes"]})
    if notes:
        lines += ["", "Skipped:", ""] + [f"- {n}" for n in notes]
    targets = []
    for r in payload["results"]:
        if r["attack"].split("-")[0] in ("FGSM", "BIM", "PGD", "APGD") and r["ours_x_floor"] is not None:
            ok = r["ours_x_floor"] <= 1.05
            targets.append(f"{r['model']} {r['attack']}: {r['ours_x_floor']:.3f}x floor ({'met' if ok else 'MISSED'})")
        elif r["attack"].split("-")[0] in ("CW", "DeepFool") and r["speedup_vs_art"] is not None:
            ok = r["speedup_vs_art"] >= 5
            b1 = r.get("speedup_vs_art_b1")
            b1 = f", {b1:.1f}x ART at batch_size=1 ({'met' if b1 >= 5 else 'MISSED'})" if b1 else ""
            targets.append(
                f"{r['model']} {r['attack']}: {r['speedup_vs_art']:.1f}x ART at equal batch ({'met' if ok else 'MISSED'}){b1}"
            )
    if targets:
        lines += ["", "Targets (<= 1.05x floor; >= 5x faster than ART): " + "; ".join(targets) + "."]
    lines += [
        "",
        "Regenerate: `python bench/attacks.py` (`--quick`, `--models`, `--attacks`, `--libs`, `--repeats`, "
        "`--threads`; `--render results.json` rewrites this section only).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    models, attacks = _models(), _attacks()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(models), default=list(models))
    p.add_argument("--attacks", nargs="+", choices=[a.name for a in attacks], default=[a.name for a in attacks])
    p.add_argument("--libs", nargs="+", choices=LIBS, default=list(LIBS), help="libraries to time")
    p.add_argument("--repeats", type=int, default=2, help="timings are the minimum over this many runs")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="batch sizes / 4 and one repeat (a smoke run)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "attacks.json")
    p.add_argument("--readme", type=Path, default=BENCH_DIR / "README.md")
    p.add_argument("--no-readme", action="store_true", help="write only the JSON")
    p.add_argument("--render", type=Path, help="only rewrite the README section from this results JSON")
    p.add_argument("--section", default="Attacks",
                   help="README section to write (e.g. 'Mixed precision: speed' for an ours/ours_mixed-only run)")
    p.add_argument("--device", default="cpu", help="torch device of the models and images (e.g. cuda)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="autocast precision of every library's attack and of the floor (fp32: no autocast)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (model and images)")
    p.add_argument("--batch-div", type=int, default=None, help="divide the spec batch sizes (--quick: 4)")
    args = p.parse_args(argv)
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        table = markdown(payload)
        replace_readme_section(args.readme, args.section, table)
        print(table)
        return payload
    if args.repeats < 1 or args.threads < 1:
        p.error(f"--repeats and --threads must be >= 1, got {args.repeats}, {args.threads}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    repeats, batch_div = (1, 4) if args.quick else (args.repeats, 1)
    batch_div = args.batch_div or batch_div
    setup = Setup(args.device, args.precision, args.channels_last)
    chosen = [a for a in attacks if a.name in args.attacks]
    start = time.perf_counter()
    machine = machine_info()
    machine["cpu_bf16_flags"] = list(cpu_bf16_flags())
    machine["amp_dtype"] = str(low_precision_dtype(True, "cpu")).replace("torch.", "")
    results = []
    for name in args.models:
        results += run_model(name, models[name], chosen, repeats, batch_div, tuple(args.libs), setup)
        write_json(args.out, {"machine": machine, "partial": True, "results": results})  # survives a later crash
    payload = {
        "machine": machine,
        "settings": {
            "command": "python bench/attacks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "repeats": repeats,
            "quick": args.quick,
            "threads": args.threads,
            "libs": list(args.libs),
            "device": args.device,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "batch_div": batch_div,
            "wall_s": time.perf_counter() - start,
        },
        "results": results,
    }
    write_json(args.out, payload)
    table = markdown(payload)
    if not args.no_readme:
        replace_readme_section(args.readme, args.section, table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
