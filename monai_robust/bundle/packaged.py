# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The project's MONAI bundles as shipped with the package: ``monai_robust/_bundles/<name>`` in an installed wheel
(``setup.py`` maps the repository's ``bundles/`` there), ``bundles/<name>`` in a source checkout.

Command line (also ``monai-robust bundle list`` / ``monai-robust bundle copy NAME DIR`` through :func:`add_parser`)::

    python -m monai_robust.bundle.packaged list
    python -m monai_robust.bundle.packaged copy robust_xray_classification ./my_bundle
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_parser", "copy_bundle", "main", "packaged_bundles", "run"]

_PACKAGE = Path(__file__).resolve().parents[1]
_LOCATIONS = (_PACKAGE / "_bundles", _PACKAGE.parent / "bundles")  # installed wheel, then source checkout


def packaged_bundles() -> dict[str, Path]:
    """The bundles shipped with this installation.

    Returns:
        ``{name: folder}`` of every bundle (a folder holding ``configs/metadata.json``), sorted by name; empty when
        neither ``monai_robust/_bundles`` nor a checkout's ``bundles/`` exists.

    Example::

        >>> sorted(packaged_bundles())
        ['robust_ct_classification', 'robust_xray_classification']
    """
    for root in _LOCATIONS:
        found = {p.parent.parent.name: p.parent.parent for p in root.glob("*/configs/metadata.json")}
        if found:
            return dict(sorted(found.items()))
    return {}


def copy_bundle(name: str, dest: str | Path) -> Path:
    """Copies a shipped bundle (configs, docs, licence, ``large_files.yml``) to ``dest``, the new bundle folder, to
    run there with ``python -m monai.bundle run --bundle_root DEST ...`` (see its ``docs/README.md``).

    Args:
        name: a bundle name, see :func:`packaged_bundles`.
        dest: the folder to create; it must not exist, or be empty (nothing is overwritten).

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        ValueError: When ``name`` is not a shipped bundle (the message lists them) or ``dest`` exists and is not
            an empty folder.

    Example::

        >>> copy_bundle("robust_xray_classification", "my_bundle")
        PosixPath('my_bundle')
    """
    bundles = packaged_bundles()
    if name not in bundles:
        raise ValueError(f"no bundle named {name!r} is shipped with monai_robust; available: {sorted(bundles)}.")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest}: exists and is not an empty folder; choose a new folder (nothing is overwritten).")
    shutil.copytree(bundles[name], dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``bundle {list, copy NAME DIR}`` to a command line's subparsers (``monai-robust``); :func:`run` runs it.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``bundle`` parser.
    """
    parser = subparsers.add_parser("bundle", help="list or copy the bundles shipped with monai_robust")
    actions = parser.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="print the shipped bundles and where they are")
    copy = actions.add_parser("copy", help="copy a shipped bundle to a new folder")
    copy.add_argument("name", help="bundle name (see `list`)")
    copy.add_argument("dir", type=Path, help="the new bundle folder (must not exist, or be empty)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs the ``bundle`` command parsed by :func:`add_parser`; returns the exit status (2 on a bad name or folder)."""
    if args.bundle_command == "list":
        for name, path in packaged_bundles().items():
            print(f"{name}\t{path}")
        return 0
    try:
        dest = copy_bundle(args.name, args.dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"copied {args.name} to {dest}; run it with: python -m monai.bundle run --config_file "
          f"{dest / 'configs' / 'train.json'} --bundle_root {dest}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_robust.bundle.packaged {list, copy NAME DIR}``: the ``bundle`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m monai_robust.bundle.packaged", description=__doc__.split("\n\n")[0])
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["bundle", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
