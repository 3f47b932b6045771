# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Universal adversarial perturbations on real medical images: the evidence for ``monai_robust.attacks.universal``.

What it does (CPU, one thread, a few minutes):

1. trains the package's :class:`~monai_robust.networks.nets.SmallCNN` on the PneumoniaMNIST train split (read with
   :func:`~monai_robust.data.medmnist_tensors`) with :func:`~monai_robust.engines.fit.fit_classifier`, keeping the
   epoch with the best validation accuracy, and reports its test accuracy;
2. fits non-targeted UAPs at ζ = 4 % (L2) on training images with ``SGDUAP`` and ``IterativeUAP`` (FGSM and
   DeepFool inner attacks) and measures their fooling rate on the *test* split against uniform and Gaussian
   noise of the same L2 norm; also a ζ sweep;
3. fits a targeted UAP towards each class and measures the targeted success rate on the test split vs the controls;
4. fits UAPs on non-medical natural images (random crops of matplotlib's sample photograph, ζ relative to the
   medical images, Minagi et al. 2022) and measures them on the test split;
5. runs two rounds of adversarial retraining against UAPs (Hirano et al. 2021);
6. repeats the non-targeted (with a ζ sweep) and targeted fits for a 3D CNN on AdrenalMNIST3D, trained with a
   class-weighted loss and chosen by balanced validation accuracy (the classes are 77 % / 23 %).

Every number goes to ``universal_evidence.json`` in ``--output-dir`` (default ``bench/results``). ``--tiny`` shrinks
everything (a few hundred images, 1 epoch, 1 pass) to seconds: a smoke test of the API, not a measurement.

API shown: a UAP fitter (:class:`~monai_robust.attacks.universal.SGDUAP`,
:class:`~monai_robust.attacks.universal.IterativeUAP`) is built on a network with a budget (``zeta``: the L2 norm
of δ relative to the mean image norm) and ``fit(images)`` returns a result with the one perturbation ``delta``;
:func:`~monai_robust.attacks.fixed_perturbation.evaluate_uap` measures it on other images;
:func:`~monai_robust.attacks.fixed_perturbation.noise_control` draws random noise of the same norm (the control a UAP must
beat) and :func:`~monai_robust.data.natural_images.photo_crops` natural images to fit on;
:func:`~monai_robust.engines.uap_retraining.uap_adversarial_retraining` retrains against UAPs.

Usage::

    python tutorials/uap_pneumoniamnist.py [--npz ../shared/data/pneumoniamnist.npz]
        [--npz3d ../shared/data/adrenalmnist3d.npz] [--output-dir bench/results]
    python tutorials/uap_pneumoniamnist.py --tiny --output-dir /tmp/uap   # seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_robust.attacks.fixed_perturbation import evaluate_uap, noise_control
from monai_robust.attacks.universal import SGDUAP, IterativeUAP
from monai_robust.data import medmnist_tensors
from monai_robust.data.natural_images import photo_crops
from monai_robust.engines.fit import classification_accuracy, fit_classifier
from monai_robust.engines.uap_retraining import uap_adversarial_retraining
from monai_robust.metrics import balanced_accuracy, binomial_interval
from monai_robust.networks import SmallCNN
from monai_robust.utils.threads import add_num_threads_argument, set_num_threads

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = (0.0, 1.0)  # model-input range: images scaled to [0, 1]
# full settings (the evidence run) and the --tiny smoke-test settings; explicit flags override either
FULL = {"epochs": 6, "epochs_3d": 20, "num_fit": 2000, "passes": 10, "retrain_passes": 5, "max_train": None,
        "max_eval": None, "max_train_3d": None, "max_eval_3d": None}
TINY = {"epochs": 1, "epochs_3d": 1, "num_fit": 48, "passes": 1, "retrain_passes": 1, "max_train": 512, "max_eval": 64,
        "max_train_3d": 64, "max_eval_3d": 32}


def make_cnn(spatial_dims: int, width: int = 32) -> nn.Module:
    """The package's SmallCNN without norm, dropout 0.2: conv-relu-pool x2, conv-relu in 2D; stride-2 convolutions
    instead of pooling in 3D (3D convolutions are slow on CPU)."""
    return SmallCNN(spatial_dims, channels=(width, 2 * width, 2 * width), norm=None, dropout=0.2,
                    downsample="pool" if spatial_dims == 2 else "stride")


def load_medmnist(path: Path, max_train: int | None = None, max_eval: int | None = None) -> dict[str, torch.Tensor]:
    """A MedMNIST ``.npz`` as float images in [0, 1] with a channel axis, and labels ``(N,)``; the first
    ``max_train`` training and ``max_eval`` validation and test images when given."""
    limits = {"train": max_train, "val": max_eval, "test": max_eval}
    tensors = {split: medmnist_tensors(path, split, limit=n) for split, n in limits.items()}
    return {f"{split}_{kind}": t[i] for split, t in tensors.items() for i, kind in enumerate(("images", "labels"))}


def get_model(data: dict[str, torch.Tensor], spatial_dims: int, epochs: int, seed: int, cache: Path | None,
              width: int = 32, balanced: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Trains (or loads from ``cache``, written by an earlier run with the same settings) the CNN."""
    if cache is not None and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        net = make_cnn(spatial_dims, saved["info"]["width"])
        net.load_state_dict(saved["state"])
        return net.eval(), {**saved["info"], "loaded_from": str(cache)}
    torch.manual_seed(seed)  # the initial weights and the shuffling
    net = make_cnn(spatial_dims, width)
    # AdamW + one-cycle; the epoch with the best validation accuracy is kept (balanced: class-weighted loss and
    # balanced validation accuracy, for the imbalanced AdrenalMNIST3D where the majority class alone scores 77 %)
    fit = fit_classifier(net, (data["train_images"], data["train_labels"]), (data["val_images"], data["val_labels"]),
                         epochs, balanced=balanced)
    test = (data["test_images"], data["test_labels"])
    info = {"spatial_dims": spatial_dims, "width": width, **fit, "test_acc": classification_accuracy(net, *test),
            "test_balanced_acc": classification_accuracy(net, *test, balanced=True)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": net.state_dict(), "info": info}, cache)
    return net, info


def controls(net: nn.Module, delta: torch.Tensor, images: torch.Tensor, target: int | None, seed: int) -> dict:
    """Rates of uniform and Gaussian noise of the same L2 norm as ``delta``."""
    out = {}
    for kind in ("uniform", "gaussian"):
        noise = noise_control(delta, kind, 2, torch.Generator().manual_seed(seed))
        ev = evaluate_uap(net, noise, images, bounds=BOUNDS, target=target)
        out[kind] = ev["fooling_rate"] if target is None else ev["targeted_success_rate"]
    return out


def with_interval(value: float, n: int) -> dict[str, Any]:
    """A rate over ``n`` test images with its exact (Clopper-Pearson) 95 % interval."""
    return {"rate": value, "n": n, "interval": list(binomial_interval(round(value * n), n))}


def balanced_accuracies(net: nn.Module, delta: torch.Tensor, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """Balanced accuracy of the test images, clean and with ``delta`` added (clipped to the bounds): the accuracy a
    model that predicts one class cannot inflate."""
    y = test["labels"]
    with torch.no_grad():
        out = {}
        for key, images in (("clean", test["images"]), ("perturbed", (test["images"] + delta).clamp(*BOUNDS))):
            pred = torch.cat([net(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)])
            out[key] = balanced_accuracy(pred, y, int(y.max()) + 1)
    return out


def run_fit(fitter, fit_images: torch.Tensor, test: dict[str, torch.Tensor], net: nn.Module, seed: int,
            reference: torch.Tensor | None = None) -> dict[str, Any]:
    """Fits one UAP on ``fit_images`` and measures it on the test images, beside noise controls of the same norm.

    ``reference``: the images that zeta is relative to, when they are not the fitting images (natural images)."""
    # fit: one perturbation delta (1, C, H, W) for all images, within the zeta budget
    t0, c0 = time.perf_counter(), time.process_time()
    res = fitter.set_random_state(seed).fit(fit_images, reference=reference)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # evaluate on unseen test images: with labels (fooling = a correct prediction turned wrong) and without them
    # (fooling = the prediction changed), per class too
    by_label = evaluate_uap(net, res.delta, {"image": test["images"], "label": test["labels"]}, bounds=BOUNDS,
                            target=res.target)
    by_pred = evaluate_uap(net, res.delta, test["images"], bounds=BOUNDS, target=res.target)
    out = {
        "method": res.method, "eps": res.eps, "zeta": res.zeta, "lp": res.lp, "target": res.target,
        "delta_l2": float(res.delta.norm()), "delta_linf": float(res.delta.abs().max()),
        "fit_curve": res.curve, "fit_time_wall_s": wall, "fit_time_cpu_s": cpu,
        "test_fooling_rate": by_label["fooling_rate"],
        "test_per_class_fooling_rate_by_label": by_label["per_class_fooling_rate"],
        "test_per_class_fooling_rate_by_clean_prediction": by_pred["per_class_fooling_rate"],
        "test_clean_accuracy": by_label["clean_accuracy"], "test_perturbed_accuracy": by_label["perturbed_accuracy"],
        "controls_same_l2_norm": controls(net, res.delta, test["images"], res.target, seed),
    }
    n = by_label["n"]
    bal = balanced_accuracies(net, res.delta, test)
    out["test_n"] = n
    out["test_fooling"] = with_interval(by_label["fooling_rate"], n)
    out["test_clean_balanced_accuracy"], out["test_perturbed_balanced_accuracy"] = bal["clean"], bal["perturbed"]
    if res.target is not None:
        out["test_targeted_success"] = with_interval(by_label["targeted_success_rate"], n)
        out["test_targeted_success_rate"] = by_label["targeted_success_rate"]
        out["test_per_class_targeted_success_rate_by_label"] = by_label["per_class_targeted_success_rate"]
    return out


def prediction_balance(net: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Clean predictions per class: a UAP that pushes every image to one class cannot fool more than the share of
    the images predicted as the other class (the bound next to the non-targeted fooling rates)."""
    with torch.no_grad():
        pred = torch.cat([net(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)])
    counts = torch.bincount(pred, minlength=2).tolist()
    return {"clean_predictions_per_class": counts,
            "one_directional_fooling_bound": max(counts) / len(pred)}


def study(net: nn.Module, data: dict[str, torch.Tensor], num_fit: int, seed: int, zetas: list[float],
          passes: int, iterative: bool) -> dict[str, Any]:
    """Non-targeted UAPs at zeta 4 % (and a zeta sweep), then targeted UAPs towards each class."""
    fit_x = data["train_images"][:num_fit]
    test = {"images": data["test_images"], "labels": data["test_labels"]}
    out: dict[str, Any] = {"fit_images": f"train[:{len(fit_x)}]", "eval_images": f"test ({len(test['images'])})",
                           **prediction_balance(net, test["images"])}
    nt = {"SGDUAP": run_fit(SGDUAP(net, zeta=0.04, lp=2, bounds=BOUNDS, max_passes=passes), fit_x, test, net, seed)}
    if iterative:
        for inner in ("fgsm", "deepfool"):
            f = IterativeUAP(net, zeta=0.04, lp=2, bounds=BOUNDS, inner=inner, max_passes=min(passes, 5))
            nt[f"IterativeUAP_{inner}"] = run_fit(f, fit_x, test, net, seed)
    out["nontargeted_zeta_4pct_l2"] = nt
    out["zeta_sweep_sgd_nontargeted"] = {
        f"{z:g}": run_fit(SGDUAP(net, zeta=z, lp=2, bounds=BOUNDS, max_passes=passes), fit_x, test, net, seed)
        for z in zetas
    }
    tg: dict[str, Any] = {}
    for target in (0, 1):
        tg[str(target)] = {"SGDUAP": run_fit(SGDUAP(net, zeta=0.04, lp=2, bounds=BOUNDS, target=target,
                                                    max_passes=passes), fit_x, test, net, seed)}
        if iterative:
            f = IterativeUAP(net, zeta=0.04, lp=2, bounds=BOUNDS, target=target, max_passes=min(passes, 5))
            tg[str(target)]["IterativeUAP_fgsm"] = run_fit(f, fit_x, test, net, seed)
    out["targeted_zeta_4pct_l2"] = tg
    return out


def main() -> None:
    # ---- settings: full by default, --tiny for seconds; explicit flags override both
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_num_threads_argument(parser, default=1)  # 1: the setting of the recorded runs
    data_dir = ROOT.parent / "shared" / "data"
    parser.add_argument("--npz", type=Path, default=data_dir / "pneumoniamnist.npz", help="PneumoniaMNIST .npz")
    parser.add_argument("--npz3d", type=Path, default=data_dir / "adrenalmnist3d.npz", help="AdrenalMNIST3D .npz")
    parser.add_argument("--data-dir", type=Path, default=None, help="a folder holding both .npz files (sets both)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default: OUTPUT_DIR/universal_evidence.json)")
    parser.add_argument("--tiny", action="store_true", help=f"smoke-test settings {TINY}")
    parser.add_argument("--max-train", type=int, help="first N training images (default: all)")
    parser.add_argument("--max-eval", type=int, help="first N validation and N test images (default: all)")
    parser.add_argument("--max-train-3d", type=int, help="first N training volumes in 3D (default: all)")
    parser.add_argument("--max-eval-3d", type=int, help="first N validation and N test volumes in 3D (default: all)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--epochs-3d", type=int)
    parser.add_argument("--num-fit", type=int, help="training images the UAPs are fitted on")
    parser.add_argument("--passes", type=int, help="passes over the fitting images per UAP fit")
    parser.add_argument("--retrain-passes", type=int, help="passes per UAP fit inside adversarial retraining")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-cache", type=Path, default=None, help="load/save the trained 2D CNN here")
    parser.add_argument("--model-cache-3d", type=Path, default=None, help="load/save the trained 3D CNN here")
    parser.add_argument("--skip-3d", action="store_true")
    args = parser.parse_args()
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data_dir is not None:
        args.npz, args.npz3d = args.data_dir / "pneumoniamnist.npz", args.data_dir / "adrenalmnist3d.npz"
    out = args.out if args.out is not None else args.output_dir / "universal_evidence.json"
    set_num_threads(args.num_threads)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "script": "tutorials/uap_pneumoniamnist.py", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "seed": args.seed, "bounds": list(BOUNDS),
    }
    limits = {k: getattr(args, k) for k in ("max_train", "max_eval", "max_train_3d", "max_eval_3d")}
    if args.tiny or any(v is not None for v in limits.values()):  # else the evidence JSON keeps its keys
        report["subset"] = {"tiny": args.tiny, **limits}

    # ---- 1. a 2D classifier on PneumoniaMNIST (the model the UAPs attack)
    data = load_medmnist(args.npz, args.max_train, args.max_eval)
    net, info = get_model(data, 2, args.epochs, args.seed, args.model_cache)
    print(f"PneumoniaMNIST CNN: test {info['test_acc']:.4f}", flush=True)
    # ---- 2./3. non-targeted and targeted UAPs fitted on training images, measured on the test split
    report["pneumoniamnist"] = {"model": info, **study(net, data, args.num_fit, args.seed, [0.02, 0.04, 0.08],
                                                         args.passes, iterative=True)}
    nontargeted = report["pneumoniamnist"]["nontargeted_zeta_4pct_l2"]
    print(json.dumps({k: v["test_fooling_rate"] for k, v in nontargeted.items()}))

    # ---- 4. natural images: random crops of a photograph, zeta relative to the medical test images
    natural = photo_crops(args.num_fit, 28, channels=1, generator=torch.Generator().manual_seed(args.seed))
    test = {"images": data["test_images"], "labels": data["test_labels"]}
    nat: dict[str, Any] = {"source": f"photo_crops: {args.num_fit} random crops of matplotlib's grace_hopper.jpg",
                           "zeta_reference": "PneumoniaMNIST test images"}
    nat["nontargeted"] = run_fit(SGDUAP(net, zeta=0.04, bounds=BOUNDS, max_passes=args.passes), natural, test, net,
                                 args.seed, reference=data["test_images"])
    for target in (0, 1):
        nat[f"targeted_{target}"] = run_fit(
            SGDUAP(net, zeta=0.04, bounds=BOUNDS, target=target, max_passes=args.passes), natural, test, net,
            args.seed, reference=data["test_images"])
    # the same crops with each image's mean and std set to those of the medical images (one statistic of the target
    # domain, as the zeta budget already uses), clipped to [0, 1]
    flat = natural.flatten(1)
    m, s = float(data["test_images"].mean()), float(data["test_images"].std())
    matched = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-3) * s + m).clamp(0, 1)
    matched = matched.reshape_as(natural)
    for target in (0, 1):
        nat[f"intensity_matched_targeted_{target}"] = run_fit(
            SGDUAP(net, zeta=0.04, bounds=BOUNDS, target=target, max_passes=args.passes), matched, test, net,
            args.seed, reference=data["test_images"])
    report["pneumoniamnist"]["natural_images_zeta_4pct_l2"] = nat

    # ---- 5. adversarial retraining against UAPs (on a copy of the model): each round fits a UAP on the current
    # model, trains on a mix of clean and perturbed images, and measures a freshly fitted UAP on the test split
    net_rt = make_cnn(2, info["width"])
    net_rt.load_state_dict(net.state_dict())
    net_rt.eval()
    fitter = SGDUAP(net_rt, zeta=0.04, bounds=BOUNDS, max_passes=args.retrain_passes).set_random_state(args.seed)
    train_sub = {"image": data["train_images"][: args.num_fit], "label": data["train_labels"][: args.num_fit]}
    t0 = time.perf_counter()
    rt = uap_adversarial_retraining(fitter, train_sub, torch.optim.Adam(net_rt.parameters(), 1e-4),
                                    eval_source={"image": data["test_images"], "label": data["test_labels"]},
                                    rounds=2, epochs=1, mix=0.5, seed=args.seed)
    report["pneumoniamnist"]["adversarial_retraining"] = {**rt.__dict__, "rounds": 2, "epochs_per_round": 1,
                                                          "mix": 0.5, "time_s": time.perf_counter() - t0}

    # ---- 6. the same fitters on 3D volumes: AdrenalMNIST3D (the API does not change with the spatial rank)
    if not args.skip_3d:
        data3 = load_medmnist(args.npz3d, args.max_train_3d, args.max_eval_3d)
        net3, info3 = get_model(data3, 3, args.epochs_3d, args.seed, args.model_cache_3d, width=16, balanced=True)
        print(f"AdrenalMNIST3D CNN: test {info3['test_acc']:.4f} balanced {info3['test_balanced_acc']:.4f}", flush=True)
        # the volumes are binary masks (about 1.6 % of the voxels are 1), so zeta is relative to a small norm: the
        # sweep goes further than in 2D
        report["adrenalmnist3d"] = {"model": info3, **study(net3, data3, len(data3["train_images"]), args.seed,
                                                            [0.04, 0.08, 0.16], args.passes, iterative=False)}

    report["total_time_s"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} in {report['total_time_s']:.0f} s")


if __name__ == "__main__":
    main()
