# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Strict bundle overrides: a config id given on the command line (``--num_epoch 1``) or to a predictor
(``image_sise=16``) that the bundle's configs do not define is an error listing the close matches, not a new key
nothing reads.

MONAI's ``python -m monai.bundle run`` merges overrides into the config before any of the config's own code runs and
keeps no record of them, so :func:`check_cli_overrides` (the first entry of our bundles' ``initialize`` lists)
reads them back from the command line, re-reads the config files named there (and the bundle's other stages,
:func:`bundle_vocabulary`), and checks every overridden id against them. Overrides given in Python (``ConfigWorkflow(..., **overrides)``) are checked with
:func:`check_override_ids` against a parser that has not been updated yet.
"""

from __future__ import annotations

import ast
import difflib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = [
    "WORKFLOW_ARGS",
    "bundle_vocabulary",
    "check_cli_overrides",
    "check_override_ids",
    "cli_overrides",
    "unknown_override_ids",
]

WORKFLOW_ARGS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
     "workflow_name", "workflow_type", "properties_path"}
)
"""Arguments of ``monai.bundle run`` / ``ConfigWorkflow`` that are not config overrides."""

_SPECIAL_KEYS = frozenset({"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"})


def unknown_override_ids(parsers: ConfigParser | Sequence[ConfigParser], ids: Iterable[str]) -> dict[str, list[str]]:
    """The ids among ``ids`` that none of ``parsers`` defines, each with its close matches.

    An id is known when it exists (``"num_epochs"``, ``"train#dataloader#batch_size"``), or when its parent exists
    and it names one of MONAI's special keys (``"validate#handlers#2#_disabled_"``). The close matches
    (:func:`difflib.get_close_matches`) are taken among the ids at the same level.

    Args:
        parsers: the config(s) as the bundle's files define them, before the overrides are applied (see
            :func:`bundle_vocabulary`).
        ids: the overridden ids (``"::"`` or ``"#"`` separated).

    Returns:
        ``{unknown id: [close matches]}``, empty when every id is known.

    Example::

        >>> unknown_override_ids(parser, ["num_epoch"])
        {'num_epoch': ['num_epochs']}
    """
    parsers = [parsers] if isinstance(parsers, ConfigParser) else list(parsers)
    out: dict[str, list[str]] = {}
    for given in ids:
        key = str(given).replace("::", "#")
        parent, _, leaf = key.rpartition("#")
        matches: list[str] = []
        for parser in parsers:
            node = parser[parent] if parent == "" or parent in parser else None
            if key in parser or (node is not None and leaf in _SPECIAL_KEYS):
                break
            siblings = [str(k) for k in node] if isinstance(node, dict) else []
            prefix = f"{parent}#" if parent else ""
            matches += [prefix + m for m in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
        else:
            out[given] = list(dict.fromkeys(matches))[:3]
    return out


def bundle_vocabulary(config_files: Sequence[str | Path], meta_file: str | Path | None = None) -> list[ConfigParser]:
    """The configs an override may address: ``config_files`` merged, and the same merged with each other config
    of their folder (a bundle's other stages), so that an id one stage defines (``guard_eps``) can be given to any
    chain of the bundle while a misspelt one cannot. Overlays that do not merge onto ``config_files`` are skipped.

    Args:
        config_files: the config files of the run, in order.
        meta_file: the metadata file; default ``metadata.json`` beside the first config, when it exists.

    Returns:
        The parsers, the one of ``config_files`` first.

    Example::

        >>> check_override_ids(bundle_vocabulary(["configs/train.json"]), ["num_epoch"])  # raises: did you mean ...
    """
    files = [str(f) for f in config_files]
    folder = Path(files[0]).parent
    meta = Path(meta_file) if meta_file is not None else folder / "metadata.json"
    others = [str(f) for f in sorted(folder.glob("*.json")) if f.name != meta.name and str(f) not in files]
    parsers = []
    for extra in [[], *([f] for f in others)]:
        parser = ConfigParser()
        try:
            parser.read_config(files + extra)
        except (ValueError, KeyError, IndexError, TypeError):
            if not extra:
                raise
            continue
        if meta.is_file():
            parser.read_meta(str(meta))
        parsers.append(parser)
    return parsers


def check_override_ids(
    parsers: ConfigParser | Sequence[ConfigParser], ids: Iterable[str], where: str = "override"
) -> None:
    """Raises when an overridden id is not defined by any of ``parsers`` (see :func:`unknown_override_ids`).

    Raises:
        ValueError: Naming every unknown id with its close matches (``did you mean ...``) and ``where``.

    Example::

        >>> check_override_ids(parser, overrides)  # before parser.update(overrides)
    """
    unknown = unknown_override_ids(parsers, ids)
    if unknown:
        parts = [
            f"{k!r} (did you mean {' or '.join(repr(m) for m in v)}?)" if v else f"{k!r} (no close match)"
            for k, v in unknown.items()
        ]
        raise ValueError(
            f"unknown config id(s) in the {where}: {', '.join(parts)}. The bundle's configs do not define them, so "
            "nothing would read them; check the spelling against the config files."
        )


def cli_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The arguments of a ``python -m monai.bundle run ...`` command line as Fire reads them.

    Args:
        argv: the arguments after ``run`` (``--key value``, ``--key=value``, or ``--flag`` for ``True``).

    Returns:
        ``(workflow arguments, overridden ids)``: the :data:`WORKFLOW_ARGS` with their values (literals parsed),
        and every other ``--key``.

    Example::

        >>> cli_overrides(["--config_file", "['a.json']", "--num_epoch", "1"])
        ({'config_file': ['a.json']}, ['num_epoch'])
    """
    workflow: dict[str, Any] = {}
    ids: list[str] = []
    i = 0
    while i < len(argv):
        token = str(argv[i])
        i += 1
        if not token.startswith("--"):
            continue  # positional (run_id)
        key, eq, value = token[2:].partition("=")
        if not eq:
            value = True
            if i < len(argv) and not str(argv[i]).startswith("--"):
                value, i = argv[i], i + 1
        if key.replace("-", "_") in WORKFLOW_ARGS:
            workflow[key.replace("-", "_")] = _literal(value)
        else:
            ids.append(key)
    return workflow, ids


def check_cli_overrides(argv: Sequence[str] | None = None) -> list[str]:
    """Checks the ids overridden on a ``python -m monai.bundle run`` command line against the config files it names
    (and ``--args_file``'s overrides likewise); run it first in a bundle's ``initialize`` list. Outside that command
    (a ``ConfigWorkflow`` built in Python, ``torchrun`` of another module) there is nothing to read and it returns.

    Args:
        argv: default ``sys.argv``.

    Returns:
        The ids that were checked.

    Raises:
        ValueError: When an overridden id is not defined by the config files (close matches listed).

    Example::

        "initialize": ["$monai_robust.utils.overrides.check_cli_overrides()", ...]
    """
    argv = list(sys.argv if argv is None else argv)
    main = Path(str(argv[0])) if argv else Path()
    if len(argv) < 2 or main.parent.name != "bundle" or main.name != "__main__.py" or argv[1] not in ("run", "run_workflow"):
        return []
    workflow, ids = cli_overrides(argv[2:])
    if workflow.get("args_file"):
        args = ConfigParser.load_config_files(str(workflow["args_file"]))
        workflow = {**{k: v for k, v in args.items() if k in WORKFLOW_ARGS}, **workflow}
        ids += [k for k in args if k not in WORKFLOW_ARGS]
    config_file = workflow.get("config_file")
    if not ids or not config_file:
        return ids
    files = [str(f) for f in ([config_file] if isinstance(config_file, (str, Path)) else config_file)]
    vocabulary = bundle_vocabulary(files, workflow.get("meta_file"))
    check_override_ids(vocabulary, ids, where="command line (--id value)")
    return ids


def _literal(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
