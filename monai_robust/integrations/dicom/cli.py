# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``python -m monai_robust.dicom {screen,serve}``: DICOM screening with a trained bundle.

``screen --bundle B --input DICOM_FOLDER --output OUT`` reads every file under the inputs, screens the series that
match ``--modality`` / ``--image-type`` / ``--body-part`` with the bundle's model and detector guard, and writes one
DICOM Comprehensive SR and one JSON per series plus ``screening_summary.json``. ``serve`` runs a DICOM storage node
that does the same for what a PACS or modality sends, and C-STOREs the SR on. Exit codes: 0 when nothing failed,
1 when some file or series failed or got no verdict (the run still went through every file), 2 when the tool could
not run (bad arguments, missing folders, a bundle, checkpoint or guard that cannot be loaded).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence

from monai_robust.integrations.dicom.node import LOOPBACK, DicomNode
from monai_robust.integrations.dicom.peer import DicomPeer, validate_ae_title, validate_port
from monai_robust.integrations.dicom.workflow import (
    EXIT_USAGE,
    DicomUsageError,
    parse_overrides,
    rules_from,
    screen,
    serve,
)
from monai_robust.integrations.dicomweb import DicomWebClient, screen_from_dicomweb, store_summary_srs
from monai_robust.integrations.dicomweb_node import StowDestination, pull_dicomweb
from monai_robust.utils.threads import add_num_threads_argument, set_num_threads

__all__ = ["main"]

PROG = "python -m monai_robust.dicom"


def _add_bundle_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments both commands share: the bundle, the model and which series to screen."""
    p.add_argument("--bundle", required=True, help="bundle folder (configs/ read from here)")
    p.add_argument("--bundle-root", default=None, help="folder holding models/ and data/ (default: the bundle folder)")
    p.add_argument("--ckpt-file", default=None, help="weights to load (default: the bundle's, hardened when present)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: the bundle's)")
    p.add_argument(
        "--override",
        nargs="+",
        default=[],
        metavar="ID=VALUE",
        help="bundle config overrides, VALUE parsed as JSON when it can be (e.g. image_size=32); unknown ids are errors",
    )
    p.add_argument(
        "--modality",
        nargs="+",
        default=["CR", "DX"],
        help="DICOM Modality defined terms to screen (default: CR DX; quote '*' for any)",
    )
    p.add_argument(
        "--image-type", nargs="+", default=None, help="values that must all appear in ImageType (default: any)"
    )
    p.add_argument("--body-part", nargs="+", default=None, help="BodyPartExamined values to screen (default: any)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    add_num_threads_argument(p)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="DICOM screening with a trained bundle and its adversarial-input guard: screen DICOM folders, or "
        "serve as a DICOM storage node next to a PACS; one DICOM SR and one JSON per series.",
        epilog="Exit codes: 0 nothing failed; 1 some file or series failed or got no verdict (every file was still "
        "tried); 2 the tool could not run (bad arguments, folders, bundle, checkpoint or guard file).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "screen",
        help="screen DICOM series with a bundle and write DICOM SR + JSON results",
        description="Screen DICOM series with a trained bundle; write one DICOM SR and one JSON per series.",
    )
    _add_bundle_arguments(s)
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="DICOM files or folders (read recursively, never modified)")
    source.add_argument(
        "--dicomweb", metavar="URL", help="screen a PACS's series instead: QIDO-RS/WADO-RS from this DICOMweb root"
    )
    s.add_argument("--study", nargs="+", default=None, metavar="UID", help="with --dicomweb: these studies only")
    stow = s.add_mutually_exclusive_group()
    stow.add_argument("--stow", action="store_true", help="with --dicomweb: store each SR back by STOW-RS")
    stow.add_argument("--stow-url", default=None, metavar="URL", help="store each SR by STOW-RS to this DICOMweb root")
    s.add_argument("--output", required=True, help="folder for the SR, JSON and screening_summary.json files")
    s.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    v = sub.add_parser(
        "serve",
        help="run a DICOM node (storage SCP) that screens received series and sends the SR on",
        description="A DICOM storage SCP that screens each received series with a trained bundle and its guard, and "
        "sends a DICOM SR to a destination AE (C-STORE) or DICOMweb server (STOW-RS). Each received instance is written to the spool folder and flushed "
        "to disk before the C-STORE is answered with Success; after a crash, what is in the spool is screened on "
        "the next start. Runs until Ctrl-C or SIGTERM.",
    )
    _add_bundle_arguments(v)
    add = v.add_argument
    add("--ae-title", default="MONAI_ROBUST", help="this node's AE title (default: MONAI_ROBUST)")
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    add("--port", type=int, default=11112, help="TCP port (default: 11112; 0 = any free port, logged)")
    where = v.add_mutually_exclusive_group()
    where.add_argument("--destination", default=None, metavar="AE@HOST:PORT", help="where SRs are sent by C-STORE")
    where.add_argument(
        "--destination-dicomweb", default=None, metavar="URL", help="where SRs are stored by STOW-RS (a DICOMweb root)"
    )
    add(
        "--pull-dicomweb",
        default=None,
        metavar="URL",
        help="once started, pull studies by QIDO-RS/WADO-RS from this DICOMweb root into the node (per --modality; "
        "the node's own AE title calls it over loopback; if the pull fails the node stops, exit code 1)",
    )
    add("--study", nargs="+", default=None, metavar="UID", help="with --pull-dicomweb: these studies only")
    add("--output", default=None, help="folder for every SR + JSON sidecar")
    add("--undelivered", default=None, help="folder for SRs the destination did not accept (when no --output)")
    add(
        "--spool",
        default=None,
        help="folder where received instances wait until screened; reuse it after a restart to resume "
        "(default: <output>/.spool, else <undelivered>/.spool, else a new temporary folder)",
    )
    add("--allow-ae", nargs="+", default=None, metavar="AE", help="calling AE titles accepted (default: any)")
    add(
        "--allow-host",
        nargs="+",
        default=None,
        metavar="HOST",
        help="peer addresses, networks or host names accepted (default: 127.0.0.1 ::1)",
    )
    add(
        "--series-timeout",
        type=float,
        default=30.0,
        help="seconds without a new instance before a series is complete (default: 30; 0 = only on association end)",
    )
    add("--no-complete-on-release", action="store_true", help="do not complete series when their association ends")
    add(
        "--max-associations",
        type=int,
        default=10,
        help="associations served at once; more are rejected with 'local limit exceeded' (default: 10)",
    )
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _log(level: int | str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs each copied DICOM module at INFO


def _load_kwargs(args: argparse.Namespace) -> dict:
    return {
        "bundle_root": args.bundle_root,
        "ckpt_file": args.ckpt_file,
        "device": args.device,
        "overrides": parse_overrides(args.override),
        "batch_size": args.batch_size,
    }


def _serve(args: argparse.Namespace, stop_event: threading.Event | None) -> int:
    load_kwargs = _load_kwargs(args)  # the cheap checks first, so a typo is reported before the bundle is loaded
    if args.series_timeout < 0 or (args.series_timeout == 0 and args.no_complete_on_release):
        raise DicomUsageError(
            f"--series-timeout must be > 0 (or 0 with association-end completion), got {args.series_timeout}."
        )
    try:
        node_options = dict(
            ae_title=validate_ae_title(args.ae_title, "--ae-title"),
            host=args.host,
            port=validate_port(args.port, "--port", allow_zero=True),
            destination=StowDestination(args.destination_dicomweb)
            if args.destination_dicomweb
            else None
            if args.destination is None
            else DicomPeer.parse(args.destination),
            output_dir=args.output,
            undelivered_dir=args.undelivered,
            allowed_ae_titles=None
            if args.allow_ae is None
            else [validate_ae_title(a, "--allow-ae") for a in args.allow_ae],
            allowed_hosts=args.allow_host or LOOPBACK,
            complete_on_release=not args.no_complete_on_release,
            series_timeout=args.series_timeout if args.series_timeout > 0 else None,
            spool_dir=args.spool,
            max_associations=args.max_associations,
        )
    except ValueError as e:
        raise DicomUsageError(str(e)) from e
    rules = rules_from(args.modality, args.image_type, args.body_part)
    if args.study and not args.pull_dicomweb:
        raise DicomUsageError("--study needs --pull-dicomweb.")
    if args.pull_dicomweb:
        if node_options["allowed_ae_titles"] is not None:
            node_options["allowed_ae_titles"].append(node_options["ae_title"])  # the pull calls from the node's AE
        try:
            source = DicomWebClient(args.pull_dicomweb)
        except ValueError as e:
            raise DicomUsageError(f"--pull-dicomweb: {e}") from e
        filters = [{"Modality": m} for m in rules.modalities] if rules.modalities else None

        def on_start(node: DicomNode) -> None:
            pull_dicomweb(node, source, args.study, filters)

    return serve(
        args.bundle, rules=rules, node_options=node_options, stop_event=stop_event,
        on_start=on_start if args.pull_dicomweb else None, **load_kwargs,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None, stop_event: threading.Event | None = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        stop_event: for ``serve`` embedded in a thread (where no signal handler can be installed): the node stops
            when it is set.

    Returns:
        The exit code: 0 when nothing failed, 1 when some file or series failed, 2 when the tool could not run.

    Example::

        >>> main(["screen", "--bundle", "bundles/robust_xray_classification", "--input", "incoming", "--output", "out"])
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse exits 2 on errors, 0 for --help
        return int(e.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a command is required (screen, serve)", file=sys.stderr)
        return EXIT_USAGE
    try:
        set_num_threads(args.num_threads)
    except ValueError as e:
        print(f"{parser.prog} {args.command}: error: --num-threads: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            _log(args.log_level)
            return _serve(args, stop_event)
        _log(logging.WARNING if args.quiet else logging.INFO)
        rules = rules_from(args.modality, args.image_type, args.body_part)
        if args.dicomweb is None and (args.study or args.stow):
            raise DicomUsageError("--study and --stow need --dicomweb.")
        if args.dicomweb is not None:
            stow_url = args.dicomweb if args.stow else args.stow_url
            summary = screen_from_dicomweb(
                args.bundle,
                args.dicomweb,
                args.output,
                study_uids=args.study,
                modalities=rules.modalities,
                stow_url=stow_url,
                rules=rules,
                echo=True,
                **_load_kwargs(args),
            )
            return int(summary["exit_code"])
        summary = screen(args.bundle, args.input, args.output, rules=rules, echo=True, **_load_kwargs(args))
        if args.stow_url:
            store_summary_srs(summary, DicomWebClient(args.stow_url), echo=True)
        return int(summary["exit_code"])
    except DicomUsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
