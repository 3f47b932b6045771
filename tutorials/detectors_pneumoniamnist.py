# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Detecting adversarial chest X-rays (PneumoniaMNIST) with KD+BU, LID, Mahalanobis and deep-feature detectors,
following the protocol of Ma et al., "Understanding Adversarial Attacks on Deep Learning Based Medical Image
Analysis Systems", Pattern Recognition 110, 2021 (https://arxiv.org/abs/1907.10456).

Protocol:

* **model-train / model-test**: a MONAI ``DenseNet`` (2D, dropout 0.2) is trained on a random part of the train
  split; every other image (the rest of train, val and test) is never seen by the model and forms the detector pool.
* **detector-fit / calibration / detector-test**: the correctly classified pool images are split by image (an image
  and its adversarial versions stay in the same part) into a part used to fit the detectors, a part of clean images
  used only to calibrate the runtime guard's threshold, and a part used only to score.
* Attacks on every pool image: FGSM, BIM (10 steps), PGD (10 steps, random start) at L-inf eps in {1, 2, 4}/255
  (images in [0, 1]), and CW-L2 (unbounded, minimal perturbation). As in Ma et al., only **successful**
  adversarial examples are used (to fit and to score); the success rate is reported beside each AUC.
* Each detector is fitted on all clean detector-fit images versus the successful adversarial detector-fit images of
  one attack, and its ROC AUC (MONAI ``compute_roc_auc``) is measured on the detector-test part.
* **Cross-attack**: detectors fitted on PGD at 4/255 are scored against CW and SMIA (4/255) and the other attacks.
* **Guard**: the best detector's threshold at 5 % false positives on the calibration images; its false-positive
  rate on the clean detector-test images and its detection rate per attack.
* **Adaptive attack**: :class:`~monai_robust.detectors.adaptive.DetectorAwarePGD` (PGD that also lowers the detector
  score, hinge at the guard's threshold) against each detector; reported honestly as the fraction of images that
  fool the classifier *and* pass the guard, next to plain PGD.
* **3D**: the same for PGD on AdrenalMNIST3D with a 3D DenseNet (one attack, every detector).

CW (``monai_robust/attacks/cw.py``) and SMIA (``monai_robust/attacks/smia.py``) are imported lazily: when missing,
the JSON says so.

Writes ``detectors.json`` to ``--output-dir`` (default ``bench/results``) and prints the tables. CPU,
``torch.set_num_threads(1)``; about 7 minutes on a shared 2-core machine. ``--tiny`` shrinks everything (a few
hundred images, 1 epoch, few attack steps, one eps) to seconds: a smoke test of the API, not a measurement.

API shown: a detector (:class:`~monai_robust.detectors.KDBUDetector`, :class:`~monai_robust.detectors.LIDDetector`,
:class:`~monai_robust.detectors.MahalanobisDetector`, :class:`~monai_robust.detectors.DeepFeatureDetector`) wraps
the classifier and the names of the layers it reads; ``fit(clean, adversarial)`` learns its statistics and
``detector(x)`` returns one score per image (higher: more likely adversarial);
:func:`~monai_robust.detectors.detection_auc` scores it; :class:`~monai_robust.detectors.DetectorGuard` turns it
into a runtime guard with a threshold calibrated on clean images at a chosen false-positive rate;
:class:`~monai_robust.detectors.DetectorAwarePGD` is the adaptive attack that knows the guard.

Usage::

    python tutorials/detectors_pneumoniamnist.py [--npz ../shared/data/pneumoniamnist.npz]
        [--npz3d ../shared/data/adrenalmnist3d.npz] [--output-dir bench/results]
    python tutorials/detectors_pneumoniamnist.py --tiny --output-dir /tmp/detectors   # seconds
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import monai
import torch
from monai.networks.nets import DenseNet
from torch import nn

from monai_robust.attacks.fgsm import FGSM
from monai_robust.attacks.functional import lp_norm
from monai_robust.attacks.pgd import BIM, PGD
from monai_robust.data import MEDMNIST_SPLITS, medmnist_tensors
from monai_robust.detectors import (
    DeepFeatureDetector,
    Detector,
    DetectorAwarePGD,
    DetectorGuard,
    FeatureSqueezingDetector,
    KDBUDetector,
    LIDDetector,
    MahalanobisDetector,
    detection_auc,
)
from monai_robust.metrics import balanced_accuracy, binomial_interval
from monai_robust.utils.threads import add_num_threads_argument, set_num_threads

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = (0.0, 1.0)
EPS_LIST = (1, 2, 4)  # in 1/255
LAYERS = (  # every stage of the DenseNet, then the logits
    "features.relu0",
    "features.denseblock1",
    "features.transition1.relu",
    "features.denseblock2",
    "features.transition2.relu",
    "features.denseblock3",
    "class_layers.relu",
    "class_layers.out",
)
LAST_HIDDEN = "class_layers.flatten"
CW_IMAGES = 300
# full settings (the evidence run) and the --tiny smoke-test settings; explicit flags override either
FULL = {"model_train": 3000, "epochs": 3, "max_pool": None, "eps": list(EPS_LIST), "attack_steps": 10, "cw_steps": 40,
        "cw_images": CW_IMAGES, "adaptive_images": 200, "adaptive_steps": 20, "small_model": False, "epochs_3d": 8,
        "max_train_3d": None, "max_pool_3d": None, "lid_batch": 100, "lid_batch_3d": 50}
TINY = {"model_train": 512, "epochs": 1, "max_pool": 200, "eps": [4], "attack_steps": 3, "cw_steps": 5,
        "cw_images": 24, "adaptive_images": 24, "adaptive_steps": 3, "small_model": True, "epochs_3d": 1,
        "max_train_3d": 64, "max_pool_3d": 48, "lid_batch": 40, "lid_batch_3d": 15}

# each detector is built from the classifier and the names of the layers whose activations it reads (KD+BU: the last
# hidden layer only); fitted statistics are buffers, so a detector's state_dict is its checkpoint
DETECTORS: dict[str, Callable[[nn.Module, tuple[str, ...]], Detector]] = {
    "KD+BU": lambda net, layers: KDBUDetector(net, (LAST_HIDDEN,), num_samples=10),
    "LID": lambda net, layers: LIDDetector(net, layers, k=20, batch_size=100),
    "Mahalanobis": lambda net, layers: MahalanobisDetector(net, layers),
    "DFeat": lambda net, layers: DeepFeatureDetector(net, layers),
    "DFeat+FS": lambda net, layers: FeatureSqueezingDetector(net, ("bits:4", "median:2"), combine="logistic",
                                                             layers=layers, hidden_units=32),
}


def optional_attack(module: str, name: str) -> Any:
    """The attack class, or None when its file is not in this checkout (another part of the project)."""
    try:
        return getattr(importlib.import_module(f"monai_robust.attacks.{module}"), name)
    except (ImportError, AttributeError):
        return None


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All splits of a MedMNIST file (:func:`~monai_robust.data.medmnist_tensors`, train first), as float images in
    [0, 1] ``(N, 1, *spatial)``, labels ``(N,)`` and the number of train-split images."""
    splits = [medmnist_tensors(path, split) for split in MEDMNIST_SPLITS]
    return torch.cat([x for x, _ in splits]), torch.cat([y for _, y in splits]), len(splits[0][0])


def densenet(spatial_dims: int, small: bool = False) -> nn.Module:
    """A small MONAI DenseNet with dropout (for BU); seed ``torch`` before building it."""
    if small:
        return DenseNet(spatial_dims, 1, 2, init_features=8, growth_rate=8, block_config=(2, 2, 2), dropout_prob=0.2)
    return DenseNet(spatial_dims, 1, 2, init_features=16, growth_rate=12, block_config=(2, 2, 2), dropout_prob=0.2)


def train(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, batch_size: int = 64, lr: float = 1e-3
) -> nn.Module:
    """Plain Adam training; returns the network in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes ``(N,)``."""
    with torch.no_grad():
        return torch.cat([net(b).argmax(1) for b in x.split(batch_size)])


def low_confidence(net: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``1 - max softmax probability``: the baseline any detector should beat (successful adversarial examples at a
    small eps sit just across the decision boundary, where the classifier is unsure)."""
    if x.shape[0] == 0:
        return torch.zeros(0)
    with torch.no_grad():
        return torch.cat([1 - torch.softmax(net(b), dim=1).amax(dim=1) for b in x.split(batch_size)])


def batched(attack: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``attack(x, y)`` in batches: every attack maps (images, labels) to adversarial images of the same shape."""
    return torch.cat([attack(xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size))])


def scores(det: Detector, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """A fitted detector's scores ``(N,)``, in batches (higher: more likely adversarial)."""
    if x.shape[0] == 0:
        return torch.zeros(0)
    with torch.no_grad():
        return torch.cat([det(b) for b in x.split(batch_size)])


def rate(hits: torch.Tensor) -> dict[str, Any]:
    """A rate over ``hits`` (bool, one per image) with its ``n`` and exact (Clopper-Pearson) 95 % interval."""
    k, n = int(hits.sum()), int(hits.numel())
    return {"rate": round(k / n, 4) if n else None, "n": n,
            "interval": [round(v, 4) for v in binomial_interval(k, n)] if n else None}


def auc_or_none(clean: torch.Tensor, adv: torch.Tensor, min_adv: int = 10) -> float | None:
    """AUC, or None when fewer than ``min_adv`` adversarial test images exist (too few to estimate it)."""
    return round(detection_auc(clean, adv), 4) if adv.numel() >= min_adv else None


def make_attacks(net: nn.Module, eps_list: tuple[int, ...], with_cw: bool, num_steps: int = 10,
                 cw_steps: int = 40) -> dict[str, Any]:
    """FGSM, BIM and PGD (L-inf) at each eps in 1/255, and CW-L2; each is ``attack(images, labels) -> images``."""
    attacks: dict[str, Any] = {}
    for e in eps_list:
        eps = e / 255
        attacks[f"FGSM@{e}/255"] = FGSM(net, eps, bounds=BOUNDS)
        attacks[f"BIM@{e}/255"] = BIM(net, eps, num_steps=num_steps, bounds=BOUNDS)
        attacks[f"PGD@{e}/255"] = PGD(net, eps, num_steps=num_steps, bounds=BOUNDS)
    cw = optional_attack("cw", "CW")
    if with_cw and cw is not None:
        attacks["CW-L2"] = cw(net, bounds=BOUNDS, num_steps=cw_steps, binary_search_steps=3, initial_const=1.0)
    return attacks


def run_protocol(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    parts: dict[str, torch.Tensor],
    attacks: dict[str, Any],
    layers: tuple[str, ...],
    detectors: dict[str, Callable[[nn.Module, tuple[str, ...]], Detector]],
    seed: int,
    cw_images: int = CW_IMAGES,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[tuple[str, str], Detector]]:
    """Crafts every attack on the fit and test parts, fits every detector per attack, returns the AUC table, the
    adversarial images and the fitted detectors."""
    table: dict[str, Any] = {}
    advs: dict[str, torch.Tensor] = {}
    fitted: dict[tuple[str, str], Detector] = {}
    for name, attack in attacks.items():
        t0 = time.time()
        fit, test = parts["fit"], parts["test"]
        if name.startswith("CW"):  # minimal-perturbation search: 120 steps per image, on a subset
            fit, test = fit[:cw_images], test[:cw_images]
        attack.set_random_state(seed)
        idx = torch.cat([fit, test])
        adv = x.clone()
        adv[idx] = batched(attack, x[idx], y[idx])
        advs[name] = adv
        # as in Ma et al., only the adversarial images that fool the classifier count
        fooled = predict(net, adv) != y
        ok_fit, ok_test = fit[fooled[fit]], test[fooled[test]]
        delta = (adv[idx] - x[idx])[fooled[idx]]
        row: dict[str, Any] = {
            "success_rate": round(float(fooled[idx].float().mean()), 4),
            "success": rate(fooled[idx]),
            "n_fit": [len(fit), len(ok_fit)],
            "n_test": [len(test), len(ok_test)],
            "median_linf_x255": round(float(lp_norm(delta, "inf").median()) * 255, 3) if len(delta) else None,
            "median_l2": round(float(lp_norm(delta, 2).median()), 4) if len(delta) else None,
            "auc": {},
            "auc_confidence_baseline": auc_or_none(low_confidence(net, x[parts["test"]]),
                                                   low_confidence(net, adv[ok_test])),
        }
        for det_name, factory in detectors.items():
            if len(ok_fit) < 2:
                row["auc"][det_name] = None
                continue
            try:  # fit on clean vs adversarial images of the fit part; score the (disjoint) test part
                det = factory(net, layers).fit(x[parts["fit"]], adv[ok_fit])
            except ValueError as err:  # e.g. too few successful adversarial images for the detector's settings
                row["auc"][det_name] = f"not fitted: {err}"
                continue
            fitted[(name, det_name)] = det
            row["auc"][det_name] = auc_or_none(scores(det, x[parts["test"]]), scores(det, adv[ok_test]))
        base = row["auc_confidence_baseline"]
        row["beats_confidence_baseline"] = {d: v > base for d, v in row["auc"].items()
                                            if isinstance(v, float) and isinstance(base, float)}
        row["seconds"] = round(time.time() - t0, 1)
        table[name] = row
        print(
            f"  {name:12s} success {row['success_rate']:.3f}  AUC {row['auc']}  "
            f"baseline {row['auc_confidence_baseline']}"
            f"  ({row['seconds']} s)",
            flush=True,
        )
    return table, advs, fitted


def main() -> None:
    # ---------------------------------------------------------------- settings: full by default, --tiny for seconds
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_num_threads_argument(parser, default=1)  # 1: the setting of the recorded runs
    data_dir = ROOT.parent / "shared" / "data"
    parser.add_argument("--npz", "--data", dest="npz", type=Path, default=data_dir / "pneumoniamnist.npz",
                        help="PneumoniaMNIST .npz")
    parser.add_argument("--npz3d", "--data3d", dest="npz3d", type=Path, default=data_dir / "adrenalmnist3d.npz",
                        help="AdrenalMNIST3D .npz (the 3D part is skipped when it is missing)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default: OUTPUT_DIR/detectors.json)")
    parser.add_argument("--tiny", action="store_true", help=f"smoke-test settings {TINY}")
    parser.add_argument("--model-train", type=int, help="train-split images used to train the model")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-pool", type=int, help="first N images of the detector pool (default: all)")
    parser.add_argument("--eps", type=int, nargs="+", help="L-inf budgets in 1/255 (default: 1 2 4)")
    parser.add_argument("--attack-steps", type=int, help="BIM and PGD steps")
    parser.add_argument("--cw-steps", type=int, help="CW steps per binary-search step")
    parser.add_argument("--cw-images", type=int, help="CW on the first N images of the fit and of the test part")
    parser.add_argument("--adaptive-images", type=int, help="detector-test images the adaptive attacks run on")
    parser.add_argument("--adaptive-steps", type=int)
    parser.add_argument("--small-model", action="store_true", default=None, help="a smaller DenseNet")
    parser.add_argument("--epochs-3d", type=int)
    parser.add_argument("--max-train-3d", type=int, help="first N training volumes in 3D (default: all)")
    parser.add_argument("--max-pool-3d", type=int, help="first N volumes of the 3D detector pool (default: all)")
    parser.add_argument("--lid-batch", type=int, help="LID's minibatch (k=20 neighbours within it)")
    parser.add_argument("--lid-batch-3d", type=int, help="LID's minibatch in 3D (k=10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = args.out if args.out is not None else args.output_dir / "detectors.json"
    if 4 not in args.eps:  # the cross-attack, guard and adaptive sections use the detectors fitted on PGD at 4/255
        parser.error(f"--eps must include 4, got --eps {' '.join(map(str, args.eps))}")
    set_num_threads(args.num_threads)
    start = time.time()
    result: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                        "threads": torch.get_num_threads()},
    }

    # ---------------------------------------------------------------- splits and model (2D)
    # the model is trained on part of the train split; every other image forms the detector pool, split by image
    # into detector-fit, calibration (the guard's threshold) and detector-test parts
    x, y, n_train = load(args.npz)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(n_train, generator=g)
    model_train = perm[: args.model_train]
    pool = torch.cat([perm[args.model_train :], torch.arange(n_train, x.shape[0])])[: args.max_pool]
    torch.manual_seed(args.seed)  # the network's initial weights
    net = train(densenet(2, args.small_model), x[model_train], y[model_train], args.epochs, args.seed)
    correct = pool[predict(net, x[pool]) == y[pool]]
    correct = correct[torch.randperm(len(correct), generator=g)]
    # 45 % to fit, 10 % (at least the 20 images a 5 % false-positive threshold needs) to calibrate, the rest to test
    n_fit, n_cal = int(0.45 * len(correct)), max(int(0.1 * len(correct)), 20)
    parts = {"fit": correct[:n_fit], "calibration": correct[n_fit : n_fit + n_cal], "test": correct[n_fit + n_cal :]}
    acc = float((predict(net, x[pool]) == y[pool]).float().mean())
    result["protocol"] = {
        "data": str(args.npz.name),
        "model": f"MONAI DenseNet(2D, init_features={8 if args.small_model else 16}, growth_rate="
                 f"{8 if args.small_model else 12}, block_config=(2, 2, 2), dropout 0.2)",
        "model_train_images": len(model_train),
        "model_training": f"Adam lr 1e-3, batch 64, {args.epochs} epochs, seed {args.seed}",
        "pool_images": len(pool),
        "pool_accuracy": round(acc, 4),
        "pool_balanced_accuracy": round(balanced_accuracy(predict(net, x[pool]), y[pool], 2), 4),
        "detector_fit_clean": len(parts["fit"]),
        "calibration_clean": len(parts["calibration"]),
        "detector_test_clean": len(parts["test"]),
        "layers": list(LAYERS),
        "kd_layer": LAST_HIDDEN,
        "adversarial_examples_used": "successful only (Ma et al.); clean = every correctly classified image of the "
                                     "part",
    }
    if args.tiny or args.max_pool is not None:  # else the evidence JSON keeps its keys
        result["protocol"]["subset"] = {k: getattr(args, k) for k in ("tiny", *FULL)}
    print(f"model accuracy on the pool {acc:.3f}; parts { {k: len(v) for k, v in parts.items()} }", flush=True)

    # ---------------------------------------------------------------- AUC per attack
    cw_present = optional_attack("cw", "CW") is not None
    attacks = make_attacks(net, tuple(args.eps), with_cw=True, num_steps=args.attack_steps, cw_steps=args.cw_steps)
    print("AUC per attack (fit and test on the same attack):", flush=True)
    detectors = dict(DETECTORS)
    detectors["LID"] = lambda net, layers: LIDDetector(net, layers, k=20, batch_size=args.lid_batch)
    table, advs, fitted = run_protocol(net, x, y, parts, attacks, LAYERS, detectors, args.seed, args.cw_images)
    result["per_attack"] = table
    result["cw"] = (
        {"present": True, "settings": f"unbounded L2, num_steps={args.cw_steps}, binary_search_steps=3, "
                                     f"initial_const=1, on the first {args.cw_images} images of the fit and of the "
                                     "test part"}
        if cw_present
        else {"present": False, "note": "monai_robust/attacks/cw.py was missing in this checkout: no CW rows"}
    )
    best = {}
    for det_name in DETECTORS:
        vals = [r["auc"].get(det_name) for k, r in table.items() if not k.startswith("CW")]
        vals = [v for v in vals if isinstance(v, float)]
        best[det_name] = round(min(vals), 4) if vals else None
    result["worst_auc_over_fgsm_bim_pgd"] = best

    # ---------------------------------------------------------------- cross-attack: fit on PGD 4/255
    # does a detector fitted on one attack catch the others (an attacker does not tell which attack he uses)?
    source = "PGD@4/255"
    smia_cls = optional_attack("smia", "SMIA")
    targets = {k: v for k, v in advs.items() if (k != source and k.endswith("4/255")) or k == "CW-L2"}
    test = parts["test"]
    if smia_cls is not None:
        smia = smia_cls(net, 4 / 255, beta=1.0, sigma=1.0, num_steps=args.attack_steps, bounds=BOUNDS)
        smia.set_random_state(args.seed)
        adv = x.clone()
        adv[test] = batched(smia, x[test], y[test])
        targets["SMIA@4/255"] = adv
    cross: dict[str, Any] = {"fit_on": source, "smia_present": smia_cls is not None, "test_on": {}}
    for name, adv in targets.items():
        attacked = test[: args.cw_images] if name.startswith("CW") else test
        ok = attacked[predict(net, adv[attacked]) != y[attacked]]
        cross["test_on"][name] = {
            "success_rate": round(len(ok) / len(attacked), 4),
            "auc": {
                d: auc_or_none(scores(fitted[(source, d)], x[test]), scores(fitted[(source, d)], adv[ok]))
                for d in DETECTORS
                if (source, d) in fitted
            },
        }
        print(f"  fit {source} -> test {name:12s} {cross['test_on'][name]}", flush=True)
    result["cross_attack"] = cross

    # ---------------------------------------------------------------- guard at 5 % FPR and adaptive attacks
    # DetectorGuard(detector, fpr).calibrate(clean) sets the threshold at the clean images' (1 - fpr) quantile: at
    # run time an image scoring above it is flagged. The adaptive attack then knows the detector and the threshold.
    adaptive: dict[str, Any] = {}
    guards: dict[str, Any] = {}
    eps = 4 / 255
    # the adaptive runs cost two forward passes per step (KD+BU: 12): a fixed subset of the test part
    sub = test[: args.adaptive_images]
    plain = advs[source]
    for det_name in DETECTORS:
        det = fitted.get((source, det_name))
        if det is None:
            continue
        guard = DetectorGuard(det, fpr=0.05).calibrate(x[parts["calibration"]])
        thr = float(guard.threshold)
        clean_flags = scores(det, x[test]) > thr
        guards[det_name] = {
            "threshold": round(thr, 4),
            "calibration_fpr": round(float(guard.calibration_fpr), 4),
            "calibration": guard.calibration_report(),  # conformal rank, calibration size, where the FPR may fall
            "test_clean_fpr": round(float(clean_flags.float().mean()), 4),
            "held_out_fpr": guard.held_out_fpr(x[test]),  # its n and exact interval
            "detection_rate": {},
            "detection": {},
        }
        for name, adv in advs.items():
            attacked = test[: args.cw_images] if name.startswith("CW") else test
            ok = attacked[predict(net, adv[attacked]) != y[attacked]]
            if len(ok):
                hits = scores(det, adv[ok]) > thr
                guards[det_name]["detection_rate"][name] = round(float(hits.float().mean()), 4)
                guards[det_name]["detection"][name] = rate(hits)
        rows = {}
        for weight in (0.0, 1.0, 10.0):
            t0 = time.time()
            if weight == 0.0:
                adv_sub = plain[sub]  # plain PGD (the attack the detector was fitted on)
            else:
                attack = DetectorAwarePGD(net, det, eps, weight=weight, threshold=thr, num_steps=args.adaptive_steps,
                                          bounds=BOUNDS)
                attack.set_random_state(args.seed)
                adv_sub = batched(attack, x[sub], y[sub])
            fooled = predict(net, adv_sub) != y[sub]
            s = scores(det, adv_sub)
            flagged = s > thr
            rows[f"lambda={weight:g}"] = {
                "attack": f"PGD-{args.attack_steps} (not adaptive)" if weight == 0.0
                else f"DetectorAwarePGD-{args.adaptive_steps}, hinge at the threshold",
                "classifier_fooled": round(float(fooled.float().mean()), 4),
                "fooled_and_flagged": round(float((fooled & flagged).float().mean()), 4),
                "fooled_and_passed_guard": round(float((fooled & ~flagged).float().mean()), 4),
                "fooled_and_passed_guard_rate": rate(fooled & ~flagged),
                "auc_fooled_vs_clean": auc_or_none(scores(det, x[test]), s[fooled]),
                "seconds": round(time.time() - t0, 1),
            }
            print(f"  adaptive {det_name:11s} {rows[f'lambda={weight:g}']}", flush=True)
        adaptive[det_name] = rows
    result["guard_fpr_0.05"] = guards
    result["adaptive_eps_4/255"] = {"images": len(sub), "rows": adaptive}

    # ---------------------------------------------------------------- 3D: AdrenalMNIST3D
    # the same detectors and attacks on volumes: nothing in the API changes with the spatial rank
    if args.npz3d.is_file():
        t0 = time.time()
        x3, y3, n3 = load(args.npz3d)
        torch.manual_seed(args.seed)
        n_fit3 = n3 if args.max_train_3d is None else min(n3, args.max_train_3d)
        net3 = train(densenet(3, small=True), x3[:n_fit3], y3[:n_fit3], epochs=args.epochs_3d, seed=args.seed,
                     batch_size=32, lr=3e-3)
        pool3 = torch.arange(n3, x3.shape[0])[: args.max_pool_3d]
        acc3 = float((predict(net3, x3[pool3], 64) == y3[pool3]).float().mean())
        ok3 = pool3[predict(net3, x3[pool3], 64) == y3[pool3]]
        ok3 = ok3[torch.randperm(len(ok3), generator=g)]
        half = len(ok3) // 2
        parts3 = {"fit": ok3[:half], "test": ok3[half:]}
        det3 = dict(DETECTORS)
        det3["LID"] = lambda net, layers: LIDDetector(net, layers, k=10, batch_size=args.lid_batch_3d)
        table3, _, _ = run_protocol(
            net3, x3, y3, parts3,
            {f"PGD@{e}/255": PGD(net3, e / 255, num_steps=args.attack_steps, bounds=BOUNDS) for e in (4, 8)},
            LAYERS, det3, args.seed,
        )
        result["3d_adrenalmnist3d"] = {
            "model": "MONAI DenseNet(3D, init_features=8, growth_rate=8, block_config=(2, 2, 2), dropout 0.2), Adam lr "
            f"3e-3, {args.epochs_3d} epochs on the train split; detectors on val + test",
            "pool_accuracy": round(acc3, 4),
            "detector_fit_clean": len(parts3["fit"]),
            "detector_test_clean": len(parts3["test"]),
            "lid_settings": f"k=10, batch_size={args.lid_batch_3d} (fewer images)",
            "per_attack": table3,
            "seconds": round(time.time() - t0, 1),
        }
    result["notes"] = [
        "AUCs use successful adversarial examples only (Ma et al.) against every correctly classified clean image of "
        "the detector-test part; 'auc_confidence_baseline' scores images by 1 - max softmax, the bar a detector must "
        "clear (at 1/255 the few successful examples sit just across the decision boundary).",
        "Detector settings are fixed in the script (not tuned on the detector-test part).",
        "AUCs over fewer than 10 successful adversarial test images are reported as null; the AUC's n is 'n_test' "
        "(clean detector-test images, successful adversarial ones among them).",
        "Rates ('success', 'held_out_fpr', 'detection', 'fooled_and_passed_guard_rate') carry their n and exact "
        "(Clopper-Pearson) 95 % interval.",
    ]
    result["runtime_s"] = round(time.time() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_tables(result)
    print(f"wrote {out} in {result['runtime_s']} s")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"


def print_tables(result: dict[str, Any]) -> None:
    names = list(DETECTORS)
    print("\nROC AUC (successful adversarial vs clean detector-test images)")
    print("| attack | success | " + " | ".join(names) + " | 1 - max softmax |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for k, r in result["per_attack"].items():
        cells = [_fmt(r["auc"].get(d)) for d in names] + [_fmt(r["auc_confidence_baseline"])]
        print(f"| {k} | {r['success_rate']:.3f} | " + " | ".join(cells) + " |")
    print("\ndetection rate at the guard's threshold (5 % FPR on calibration images); clean test FPR in the last row")
    print("| attack | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    guards = result["guard_fpr_0.05"]
    for k in result["per_attack"]:
        print(f"| {k} | " + " | ".join(_fmt(guards[d]["detection_rate"].get(k) if d in guards else None)
                                       for d in names) + " |")
    print("| clean FPR | " + " | ".join(_fmt(guards[d]["test_clean_fpr"] if d in guards else None)
                                        for d in names) + " |")
    print("\nadaptive, eps 4/255: fraction of images that fool the classifier and pass the guard")
    for d, rows in result["adaptive_eps_4/255"]["rows"].items():
        print(f"| {d} | " + " | ".join(f"{k}: {v['fooled_and_passed_guard']:.3f} (fooled {v['classifier_fooled']:.3f})"
                                       for k, v in rows.items()) + " |")
    print("\ncross-attack, fitted on", result["cross_attack"]["fit_on"])
    for k, r in result["cross_attack"]["test_on"].items():
        cells = [_fmt(r["auc"].get(d)) for d in names]
        print(f"| {k} | {r['success_rate']:.3f} | " + " | ".join(cells) + " |")
    if "3d_adrenalmnist3d" in result:
        print("\n3D AdrenalMNIST3D")
        for k, r in result["3d_adrenalmnist3d"]["per_attack"].items():
            cells = [_fmt(r["auc"].get(d)) for d in names]
            print(f"| {k} | {r['success_rate']:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
