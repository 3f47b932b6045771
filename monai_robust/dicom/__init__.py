# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Command line for DICOM screening with a trained bundle (:mod:`monai_robust.integrations.dicom`).

``python -m monai_robust.dicom screen --bundle <bundle dir> --input <DICOM folder> --output <dir>`` reads every file
under the input folders, screens the series that match ``--modality`` / ``--image-type`` / ``--body-part`` with the
bundle's model and detector guard, and writes ``<series uid>.SR.dcm`` (DICOM Comprehensive SR) and
``<series uid>.json`` per series plus ``screening_summary.json``. It prints one line per series and a summary, and
exits with 0 when nothing failed, 1 when a file or a series failed (a skipped series is not a failure), 2 on usage
errors (bad arguments, missing folders, a bundle that cannot be loaded).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_ANY = ("*", "ANY")


class _UsageError(Exception):
    """A problem with the command line or the folders it names (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_robust.dicom", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    screen = sub.add_parser(
        "screen",
        help="screen DICOM series with a bundle and write DICOM SR + JSON results",
        description="Screen DICOM series with a trained bundle; write one DICOM SR and one JSON per series.",
    )
    sub.add_parser(
        "serve",
        add_help=False,
        help="run a DICOM node (storage SCP) that screens received series and sends the SR on; see 'serve --help'",
    )
    screen.add_argument("--bundle", required=True, help="bundle folder (configs/ read from here)")
    screen.add_argument(
        "--input", required=True, nargs="+", help="DICOM files or folders (read recursively, never modified)"
    )
    screen.add_argument("--output", required=True, help="folder for the SR, JSON and screening_summary.json files")
    screen.add_argument(
        "--modality", nargs="+", default=["CR", "DX"], help="Modality values to screen (default: CR DX; '*' = any)"
    )
    screen.add_argument(
        "--image-type", nargs="+", default=None, help="values that must all appear in ImageType (default: any)"
    )
    screen.add_argument("--body-part", nargs="+", default=None, help="BodyPartExamined values to screen (default: any)")
    screen.add_argument(
        "--bundle-root", default=None, help="folder holding models/ and data/ (default: the bundle folder)"
    )
    screen.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: the bundle's)")
    screen.add_argument(
        "--ckpt-file", default=None, help="weights to load (default: the bundle's, hardened when present)"
    )
    screen.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    screen.add_argument(
        "--override",
        nargs="+",
        default=[],
        metavar="ID=VALUE",
        help="bundle config overrides, VALUE parsed as JSON when it can be (e.g. image_size=32)",
    )
    screen.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return parser


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--override expects ID=VALUE, got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _rule(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None or any(v.upper() in _ANY for v in values):
        return None
    return tuple(values)


def _screen(args: argparse.Namespace) -> int:
    from monai_robust.integrations.dicom import DicomScreener, SeriesRules, write_result

    bundle = Path(args.bundle)
    if not (bundle / "configs").is_dir():
        raise _UsageError(f"--bundle {str(bundle)!r} is not a bundle folder (no configs/ in it).")
    missing = [p for p in args.input if not Path(p).exists()]
    if missing:
        raise _UsageError(f"--input: no such file or folder: {missing}.")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise _UsageError(f"--output {str(output)!r} exists and is not a folder.")
    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be >= 1, got {args.batch_size}.")
    overrides = _overrides(args.override)
    if args.bundle_root is not None:
        overrides["bundle_root"] = str(args.bundle_root)
    models = Path(overrides.get("bundle_root", bundle)) / "models"
    if (
        args.ckpt_file is None
        and "ckpt_file" not in overrides
        and not any((models / n).is_file() for n in ("model.pt", "model_hardened.pt"))
    ):
        raise _UsageError(
            f"no trained model in {str(models)!r} (model.pt / model_hardened.pt): train the bundle first."
        )
    try:
        rules = SeriesRules(
            modalities=_rule(args.modality), image_types=_rule(args.image_type), body_parts=_rule(args.body_part)
        )
        screener = DicomScreener(
            bundle, rules, batch_size=args.batch_size, device=args.device, ckpt_file=args.ckpt_file, overrides=overrides
        )
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise _UsageError(f"cannot load the bundle {str(bundle)!r}: {e}") from e

    results = screener.screen_files(args.input)
    records = []
    for r in results:
        paths = write_result(r, output)
        records.append(
            {
                "status": r.status,
                "study_instance_uid": r.study_uid,
                "series_instance_uid": r.series_uid,
                "reason": r.reason,
                "files": {k: str(v) for k, v in paths.items()},
                "sources": r.sources,
            }
        )
        print(f"{r.status:9s} {r.series_uid}: {r.reason}" if r.series_uid else f"{r.status:9s} {r.reason}")
    counts = {s: sum(r.status == s for r in results) for s in ("screened", "skipped", "failed")}
    summary = {
        "bundle": str(bundle),
        "model": screener.model_info,
        "rules": rules.to_dict(),
        "inputs": list(args.input),
        "counts": counts,
        "results": records,
    }
    (output / "screening_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{len(results)} result(s): {counts['screened']} screened, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; written to {output}"
    )
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 when nothing failed, 1 when a file or a series failed, 2 on usage errors.

    Example::

        >>> main(["screen", "--bundle", "bundles/robust_xray_classification", "--input", "incoming", "--output", "out"])
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from monai_robust.integrations.dicom_node import main_serve

        return main_serve(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on errors, 0 for --help
        return int(e.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a command is required (screen, serve)", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs each copied DICOM module at INFO
    try:
        return _screen(args)
    except _UsageError as e:
        print(f"{parser.prog} screen: error: {e}", file=sys.stderr)
        return EXIT_USAGE
