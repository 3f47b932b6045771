# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The two jobs of the DICOM command line as functions: :func:`screen` a folder, :func:`serve` as a DICOM node.

Both check their arguments first and raise :class:`DicomUsageError` for anything the user must fix (exit code 2 on
the command line): a folder that is not a bundle, no trained model, a corrupt checkpoint or guard file (named),
unknown ``--override`` ids (with the close matches), modality values that are not DICOM defined terms.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_robust.integrations.dicom.node import DicomNode
from monai_robust.integrations.dicom.results import SeriesResult, write_result
from monai_robust.integrations.dicom.screener import DicomScreener
from monai_robust.integrations.dicom.series import SeriesRules

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "DicomUsageError",
    "load_screener",
    "parse_overrides",
    "rules_from",
    "screen",
    "serve",
]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SUMMARY_NAME = "screening_summary.json"
_ANY = ("*", "ANY")
_MODEL_FILES = ("model_hardened.pt", "model.pt")


class DicomUsageError(ValueError):
    """A problem the user must fix before the tool can run: bad arguments, folders, bundle or model files."""


def rules_from(
    modality: Sequence[str] | None = ("CR", "DX"),
    image_type: Sequence[str] | None = None,
    body_part: Sequence[str] | None = None,
) -> SeriesRules:
    """:class:`SeriesRules` from command-line values (``"*"`` or ``"ANY"`` = any).

    Args:
        modality: Modality defined terms, e.g. ``["CR", "DX"]``.
        image_type: values that must all appear in ImageType.
        body_part: BodyPartExamined values.

    Returns:
        The rules.

    Raises:
        DicomUsageError: For an empty value or a modality that is not a DICOM defined term.

    Example::

        >>> rules_from(["*"]).modalities is None
        True
    """

    def rule(values: Sequence[str] | None) -> tuple[str, ...] | None:
        if values is None or any(str(v).upper() in _ANY for v in values):
            return None
        return tuple(values)

    try:
        return SeriesRules(modalities=rule(modality), image_types=rule(image_type), body_parts=rule(body_part))
    except ValueError as e:
        raise DicomUsageError(str(e)) from e


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ID=VALUE", ...]`` to a dict, VALUE parsed as JSON when it can be.

    Args:
        items: the ``--override`` values.

    Returns:
        ``{id: value}``.

    Raises:
        DicomUsageError: For an item without ``=`` or an empty id (quoted).

    Example::

        >>> parse_overrides(["image_size=32", "device=cpu"])
        {'image_size': 32, 'device': 'cpu'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DicomUsageError(f"--override expects ID=VALUE, got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _config_ids(bundle: Path) -> set[str]:
    """Every top-level id of the bundle's JSON configs (what ``--override`` may set)."""
    ids = {"bundle_root"}
    for f in sorted((bundle / "configs").glob("*.json")):
        if f.name == "metadata.json":
            continue
        try:
            content = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DicomUsageError(f"{f}: the bundle config cannot be read ({type(e).__name__}: {e}).") from e
        if isinstance(content, dict):
            ids.update(content)
    return ids


def _check_file_loads(path: Path) -> None:
    """Raises :class:`DicomUsageError` naming ``path`` when it is not a loadable PyTorch file."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DicomUsageError(
            f"{path}: corrupt, truncated or not a PyTorch weights file ({type(e).__name__}: {e}); "
            "train or fit it again."
        ) from e


def load_screener(
    bundle: str | os.PathLike,
    rules: SeriesRules,
    *,
    bundle_root: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 16,
) -> DicomScreener:
    """A :class:`DicomScreener` for a bundle folder, with every user-fixable problem a :class:`DicomUsageError`.

    Args:
        bundle: the bundle folder (``configs/`` in it).
        rules: which instances to screen.
        bundle_root: folder holding ``models/`` and ``data/`` (default: the bundle folder).
        ckpt_file: weights to load (default: the bundle's, hardened when present).
        device: torch device (default: the bundle's).
        overrides: config ids to override; unknown ids are refused with the close matches.
        batch_size: images per forward pass (>= 1).

    Returns:
        The screener.

    Raises:
        DicomUsageError: Not a bundle folder, unknown override ids, no trained model, a corrupt checkpoint or guard
            file (named), or any other error while loading the bundle.

    Example::

        >>> load_screener("bundles/robust_xray_classification", rules_from(["CR"]), bundle_root="run1")
    """
    bundle = Path(bundle)
    if not (bundle / "configs").is_dir():
        raise DicomUsageError(f"--bundle {str(bundle)!r} is not a bundle folder (no configs/ in it).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DicomUsageError(f"--batch-size must be >= 1, got {batch_size!r}.")
    overrides = dict(overrides or {})
    known = _config_ids(bundle)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        hints = [
            f"{k!r} (did you mean {' or '.join(map(repr, close))}?)"
            if (close := difflib.get_close_matches(k, known))
            else repr(k)
            for k in unknown
        ]
        raise DicomUsageError(f"--override: unknown config id(s) {', '.join(hints)} in the bundle {str(bundle)!r}.")
    if bundle_root is not None:
        overrides["bundle_root"] = str(bundle_root)
    models = Path(overrides.get("bundle_root", bundle)) / "models"
    if ckpt_file is None and "ckpt_file" not in overrides and not any((models / n).is_file() for n in _MODEL_FILES):
        raise DicomUsageError(
            f"no trained model in {str(models)!r} (model.pt / model_hardened.pt): train the bundle first."
        )
    try:
        return DicomScreener(
            bundle, rules, batch_size=batch_size, device=device, ckpt_file=ckpt_file, overrides=overrides
        )
    except Exception as e:
        # name the file that does not load (the checkpoint, the guard) rather than repeat a bare unpickler error
        candidates = [Path(ckpt_file)] if ckpt_file is not None else [models / n for n in _MODEL_FILES]
        for f in [*candidates, models / "guard.pt"]:
            if f.is_file():
                _check_file_loads(f)
        raise DicomUsageError(f"cannot load the bundle {str(bundle)!r}: {type(e).__name__}: {e}") from e


def _record(r: SeriesResult, paths: dict[str, Path]) -> dict[str, Any]:
    return {
        "status": r.status,
        "study_instance_uid": r.study_uid,
        "series_instance_uid": r.series_uid,
        "reason": r.reason,
        "partial": r.partial,
        "version": r.version,
        "files": {k: str(v) for k, v in paths.items()},
        "sources": r.sources,
    }


def screen(
    bundle: str | os.PathLike | DicomScreener,
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    output: str | os.PathLike,
    *,
    rules: SeriesRules | None = None,
    echo: bool = False,
    **load_kwargs: Any,
) -> dict[str, Any]:
    """Screens DICOM files and folders, writes one SR + JSON per series and ``screening_summary.json``.

    Every problem with one file or one series becomes that file's result (status ``"failed"``, its path in the
    message); the run goes on, and the summary is written even when writing a result fails.

    Args:
        bundle: a bundle folder (then ``load_kwargs`` go to :func:`load_screener`) or a ready :class:`DicomScreener`.
        inputs: files and folders (read recursively, never modified).
        output: the results folder (created).
        rules: which instances to screen (default: CR and DX) when ``bundle`` is a folder.
        echo: print one line per series and a total (the command line's output).
        load_kwargs: ``bundle_root``, ``ckpt_file``, ``device``, ``overrides``, ``batch_size``.

    Returns:
        The summary (also in ``<output>/screening_summary.json``): ``counts`` per status, ``results`` (status,
        UIDs, reason, files, sources per series) and ``exit_code``: 0 when nothing failed, 1 when some file or
        series failed or got no verdict (``"not screened"``).

    Raises:
        DicomUsageError: When the tool cannot run: missing inputs, an output path that is a file, bundle problems.

    Example::

        >>> summary = screen("bundles/robust_xray_classification", ["incoming/"], "results/", bundle_root="run1")
        >>> summary["counts"]
        {'screened': 3, 'skipped': 1, 'not screened': 0, 'failed': 0}
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    missing = [str(p) for p in inputs if not Path(p).exists() and not Path(p).is_symlink()]
    if missing:
        raise DicomUsageError(f"--input: no such file or folder: {missing}.")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DicomUsageError(f"--output {str(output)!r} exists and is not a folder.")
    if isinstance(bundle, DicomScreener):
        screener = bundle
    else:
        screener = load_screener(bundle, rules or SeriesRules(), **load_kwargs)
    output.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    results: list[SeriesResult] = []
    try:
        results = screener.screen_files(inputs)
        for r in results:
            try:
                paths = write_result(r, output)
            except Exception as e:  # a result that cannot be written is that series' failure, not the run's
                r.errors.append(f"writing the result to {output} failed ({type(e).__name__}: {e})")
                r.status, r.reason = "failed", f"{r.reason}; {r.errors[-1]}"
                paths = {}
            records.append(_record(r, paths))
            if echo:
                again = f" [version {r.version}: earlier results kept]" if (r.version or 1) > 1 else ""
                print(
                    f"{r.status:12s} {r.series_uid}: {r.reason}{again}"
                    if r.series_uid
                    else f"{r.status:12s} {r.reason}"
                )
    finally:
        counts = {s: sum(r.status == s for r in results) for s in ("screened", "skipped", "not screened", "failed")}
        summary = {
            "bundle": str(getattr(screener.predictor, "bundle_dir", bundle)),
            "model": screener.model_info,
            "rules": screener.rules.to_dict(),
            "inputs": [str(p) for p in inputs],
            "counts": counts,
            "complete": len(records) == len(results),
            "exit_code": EXIT_FAILED if counts["failed"] or counts["not screened"] else EXIT_OK,
            "results": records,
        }
        (output / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    if echo:
        print(
            f"{len(results)} result(s): {counts['screened']} screened, {counts['skipped']} skipped, "
            f"{counts['not screened']} not screened, {counts['failed']} failed; written to {output}"
        )
    return summary


def serve(
    bundle: str | os.PathLike | DicomScreener,
    *,
    rules: SeriesRules | None = None,
    node_options: dict[str, Any] | None = None,
    stop_event: threading.Event | None = None,
    on_start: Callable[[DicomNode], Any] | None = None,
    **load_kwargs: Any,
) -> int:
    """Runs a :class:`~monai_robust.integrations.dicom.node.DicomNode` until ``stop_event`` is set (or Ctrl-C /
    SIGTERM in the main thread).

    Args:
        bundle: a bundle folder (``load_kwargs`` go to :func:`load_screener`) or a ready :class:`DicomScreener`.
        rules: which instances to screen (default: CR and DX) when ``bundle`` is a folder.
        node_options: keyword arguments of :class:`DicomNode` (AE title, port, destination, spool, ...).
        stop_event: the node stops when it is set.
        on_start: called with the started node (e.g. a DICOMweb pull); an exception from it stops the node and is
            logged, the exit code is then 1.

    Returns:
        0 after a clean stop, 1 when the node cannot listen or ``on_start`` failed.

    Raises:
        DicomUsageError: For bad node options or bundle problems.

    Example::

        >>> serve("bundles/robust_xray_classification", node_options={"ae_title": "SCREEN", "port": 11112})
    """
    import signal

    node_options = dict(node_options or {})
    screener = (
        bundle if isinstance(bundle, DicomScreener) else load_screener(bundle, rules or SeriesRules(), **load_kwargs)
    )
    try:
        node = DicomNode(screener, **node_options)
    except ValueError as e:
        raise DicomUsageError(str(e)) from e
    try:
        node.start()
    except RuntimeError as e:
        logger.error("%s", e)
        return EXIT_FAILED
    stop = stop_event if stop_event is not None else threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        logger.info("signal %s received: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    code = EXIT_OK
    try:
        if on_start is not None:
            on_start(node)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    except Exception:
        logger.exception(
            "DICOM node %s: the start-up action (on_start, e.g. a DICOMweb pull) failed; stopping", node.ae_title
        )
        code = EXIT_FAILED
    finally:
        node.stop()
    return code
