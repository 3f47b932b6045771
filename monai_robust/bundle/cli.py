# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust``: evaluate, harden, guard and predict with any MONAI classification bundle, in the image's
stored units; screen DICOM series and serve a DICOM node with it; list or copy the bundles shipped with the package.

Every bundle command takes ``--bundle DIR``, the data (a MONAI datalist JSON, a class-folder tree, a CSV manifest, a
DICOM folder or an image), ``--eps`` in stored units or ``--zeta``, ``--device``, ``--num-threads`` (default: the
cores this process may use, fewer when the machine is loaded, as the bundles' ``num_threads`` 0), and MONAI-style
config overrides as further ``--id value`` pairs (``--network_def#spatial_dims 2``, ``--ckpt_path models/best.pt``).
``evaluate --suite standard`` (the default) runs FGSM, PGD-10, AutoAttack and Square (``--aa-steps``,
``--aa-queries``: AutoAttack's budget, the standard 100 and 5000 by default; the report says when it is reduced);
``--suite quick`` runs FGSM and PGD only."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from monai_robust.bundle import packaged
from monai_robust.bundle.data import bundle_loader, read_items
from monai_robust.bundle.evaluate import SUITES, evaluate_bundle, threat_record
from monai_robust.bundle.guard import fit_bundle_guard
from monai_robust.bundle.harden import harden_bundle
from monai_robust.bundle.layout import GUARD_NAME
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.bundle.threat import first_images, infer_stored_range, stored_budget
from monai_robust.integrations.dicom.cli import main as dicom_main
from monai_robust.report.verdicts import headline_lines
from monai_robust.utils.threads import add_num_threads_argument, set_num_threads

__all__ = ["main", "parse_overrides"]

REFUSED_CODES = {"spatial_dims", "channels", "non_finite", "modality"}
"""Contract violations that stop evaluate/harden/guard (the data is not what the bundle takes)."""

COMMANDS = ("evaluate", "harden", "guard", "predict", "screen", "serve", "bundle")


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """MONAI-style ``--id value`` (or ``--id=value``) pairs; values are Python/JSON literals when they parse, else
    strings, as on ``python -m monai.bundle run``.

    Raises:
        ValueError: For a token that is not ``--id`` or an id without a value.

    Example::

        >>> parse_overrides(["--network_def#spatial_dims", "2", "--ckpt_path=models/best.pt"])
        {'network_def#spatial_dims': 2, 'ckpt_path': 'models/best.pt'}
    """
    out: dict[str, Any] = {}
    items = list(tokens)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or len(key) < 3:
            raise ValueError(f"unexpected argument {key!r}: config overrides are written --id value.")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif items and not items[0].startswith("--"):
            value = items.pop(0)
        else:
            raise ValueError(f"override --{key} has no value.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-robust", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {
        "evaluate": "robustness report in stored units (standard suite: FGSM, PGD, AutoAttack, Square)",
        "harden": "adversarial fine-tuning; writes model_hardened.pt beside the checkpoint",
        "guard": "fit and calibrate the detector guard; writes guard.pt beside the checkpoint",
        "predict": "classes, probabilities, guard verdict and input-contract flags as JSON",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text, allow_abbrev=False)
        p.add_argument("--bundle", required=True, help="the bundle folder (configs/inference.json|yaml)")
        p.add_argument("data", help="datalist JSON, class-folder tree, CSV manifest, DICOM folder or image")
        p.add_argument("--split", default=None, help="split of a decathlon-style datalist (default: test, ...)")
        p.add_argument("--device", default=None, help="torch device (default: the bundle's)")
        p.add_argument("--checkpoint", default=None, help="weights (default: the config's checkpoint)")
        p.add_argument("--hardened", action="store_true", help="use model_hardened.pt written by 'harden'")
        p.add_argument("--preprocessing-id", default=None, help="config id of the preprocessing")
        p.add_argument("--bounds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="stored value range (default: the metadata's, else inferred from the data)")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--output", default=None, help="output folder or file (default: <bundle_root>/robustness/<command>)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_num_threads_argument(p)
        if name != "predict":
            budget = p.add_mutually_exclusive_group(required=True)
            budget.add_argument("--eps", type=float, nargs="+", help="L-inf budget(s) in stored units (e.g. 1 2 4)")
            budget.add_argument("--zeta", type=float, nargs="+", help="relative budget(s): eps = zeta * mean ||x||_inf")
    e = sub.choices["evaluate"]
    e.add_argument("--suite", choices=SUITES, default="standard",
                   help="standard (default): FGSM, PGD-10, AutoAttack and Square, the robust accuracy to quote is "
                        "AutoAttack's; quick: FGSM and PGD-10 only (may overstate robustness)")
    e.add_argument("--aa-steps", type=_positive_int, default=None, metavar="N",
                   help="AutoAttack iterations of APGD-CE, APGD-T, FAB-T (default 100, the standard budget)")
    e.add_argument("--aa-queries", type=_positive_int, default=None, metavar="N",
                   help="Square queries, in AutoAttack and alone (default 5000, the standard budget)")
    h = sub.choices["harden"]
    h.add_argument("--epochs", type=int, default=1)
    h.add_argument("--learning-rate", type=float, default=1e-4)
    h.add_argument("--steps", type=int, default=7, help="PGD steps per batch")
    h.add_argument("--blocks", nargs="+", default=None, help="insert sparsity blocks after these module names")
    h.add_argument("--block", default="topk", help="topk, soft_threshold or mean_centred")
    h.add_argument("--block-k", type=float, default=None, help="k of the top-k block")
    g = sub.choices["guard"]
    g.add_argument("--fpr", type=float, default=0.05, help="false-positive rate on clean images")
    g.add_argument("--layers", nargs="+", default=None, help="module names of the stored-units model to read")
    g.add_argument("--calibration", default=None, help="clean calibration data (default: every second image)")
    sub.add_parser("screen", add_help=False, help="screen DICOM series (python -m monai_robust.dicom screen)")
    sub.add_parser("serve", add_help=False, help="run the DICOM node (python -m monai_robust.dicom serve)")
    packaged.add_parser(sub)
    return parser


def _predictor(args: argparse.Namespace, overrides: dict[str, Any]) -> BundlePredictor:
    return BundlePredictor(
        args.bundle,
        overrides,
        device=args.device,
        checkpoint=args.checkpoint,
        hardened=args.hardened,
        preprocessing_id=args.preprocessing_id,
        bounds=None if args.bounds is None else tuple(args.bounds),
    )


def _with_bounds(p: BundlePredictor, loader: Any) -> str:
    """Sets the model's box when neither the metadata nor ``--bounds`` gave one; says where it came from."""
    if p.model.bounds is not None:
        return "declared (metadata or --bounds)"
    bounds, how = infer_stored_range(first_images(loader))
    p.model.bounds = bounds
    return how


def _output(args: argparse.Namespace, p: BundlePredictor, default: str) -> Path:
    return Path(args.output) if args.output else Path(p.bundle.get("bundle_root", args.bundle)) / "robustness" / default


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The report's headline (standard suite, its budget, key verdicts), clean and per-(attack, ε) accuracy and AUC
    with n (the full numbers are in evaluation.json and report/)."""
    keys = ("eps", "n", "accuracy", "auc", "attack_success_rate", "status")
    clean = {k: results.get("clean", {}).get(k) for k in ("n", "accuracy", "auc")}
    attacks = {name: [{k: r.get(k) for k in keys} for r in a["results"]] for name, a in results.get("attacks", {}).items()}
    return {
        "headline": headline_lines(results),
        "clean": clean,
        "attacks": attacks,
        "validity": [(v["name"], v["status"]) for v in results.get("validity", [])],
    }


def _run(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    p = _predictor(args, overrides)
    items = read_items(args.data, p.class_names, args.split)
    progress = not args.quiet
    if args.command == "predict":
        it = tqdm(items, desc="predict", disable=not progress)
        return {"bundle": p.name, "statements": p.statements, "contract": p.contract.to_json(), "predictions": p.predict_files(it)}
    unlabelled = [it["image"] for it in items if "label" not in it]
    if unlabelled:
        raise ValueError(f"{args.command} needs labelled data; no label for {unlabelled[:3]}.")
    loader = bundle_loader(items, p.split.loading, args.batch_size)
    how = _with_bounds(p, loader)
    sample = first_images(loader)
    eps, described = stored_budget(args.eps, args.zeta, sample, p.model.bounds)
    threat = threat_record(p, eps, described, how)
    flags = p.contract.scan(sample)
    refused = sorted(set(flags) & REFUSED_CODES)
    if refused:
        raise ValueError(f"{args.data}: images outside the bundle's input contract ({', '.join(refused)}): see `predict`.")
    threat["contract_flags_first_images"] = {"n": len(sample), **flags}
    if args.command == "evaluate":
        record = evaluate_bundle(
            p, loader, eps, _output(args, p, "evaluate"), threat=threat, suite=args.suite, aa_steps=args.aa_steps,
            aa_queries=args.aa_queries, progress=progress,
        )
        return {"threat_model": threat, "suite": record["suite"], "statements": p.statements,
                "summary": _summary(record["results"])}
    if args.command == "harden":
        train = bundle_loader(items, p.split.loading, args.batch_size, shuffle=True)
        kwargs = {"k": args.block_k} if args.block_k is not None else {}
        out = harden_bundle(
            p, train, eps[-1], epochs=args.epochs, learning_rate=args.learning_rate, num_steps=args.steps,
            blocks=args.blocks, block=args.block, block_kwargs=kwargs, progress=progress,
        )
        return {"threat_model": threat, **out}
    calibration = read_items(args.calibration, p.class_names) if args.calibration else items[1::2]
    fit = items if args.calibration else items[0::2]
    path = (p.bundle.checkpoint.parent if p.bundle.checkpoint else p.bundle.layout.models) / GUARD_NAME
    guard = fit_bundle_guard(
        p.model, bundle_loader(fit, p.split.loading, args.batch_size), bundle_loader(calibration, p.split.loading, args.batch_size),
        eps[-1], path, checkpoint=p.bundle.checkpoint, layers=args.layers, fpr=args.fpr, progress=progress,
    )
    return {
        "threat_model": threat, "guard": str(path), "layers": list(guard.detector.layers), "fpr": guard.fpr,
        "threshold": float(guard.threshold), "calibration_fpr": float(guard.calibration_fpr), "n_fit": len(fit),
        "n_calibration": len(calibration),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``monai-robust``; prints the result as JSON (``predict``: also to ``--output`` when given).

    Args:
        argv: the arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the command failed (the message printed), 2 on usage errors.

    Example::

        >>> main(["evaluate", "--bundle", "my_bundle", "data/test.json", "--eps", "1", "2", "--device", "cpu"])
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["screen"], ["serve"]):
        return dicom_main(argv)
    parser = _parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command == "bundle" and rest:
            raise ValueError(f"unexpected arguments for `bundle`: {' '.join(rest)}")
        overrides = parse_overrides(rest)
        if args.command not in (None, "bundle"):
            set_num_threads(args.num_threads)
    except SystemExit as e:
        return int(e.code or 0)
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"monai-robust: error: {e}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"monai-robust: error: a command is required ({', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    if args.command == "bundle":
        return packaged.run(args)
    try:
        result = _run(args, overrides)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"monai-robust {args.command}: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2, default=str)
    if args.command == "predict" and args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    print(text)
    return 0
