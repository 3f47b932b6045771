# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""PyTorch files written atomically and read with an error that names the file.

A checkpoint, a fitted guard or a perturbation is written to a temporary file in the same folder, flushed to disk,
then renamed over the destination (``os.replace``, atomic on POSIX and Windows): a run killed mid-write leaves the
previous file or none, never half of one. Reading refuses an empty, truncated or foreign file with a
:class:`CorruptFileError` that names it, instead of the unpickler's bare ``EOFError`` or ``RuntimeError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CorruptFileError", "atomic_torch_save", "load_torch_file"]


class CorruptFileError(ValueError):
    """A file that exists but cannot be read as a PyTorch file (empty, truncated, corrupt or of another kind).

    Command-line tools map it to exit status 2, like any other bad input.
    """


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``.

    Args:
        obj: what to save (a ``state_dict``, a dict of tensors and plain values).
        path: the destination; its folder is created.

    Returns:
        ``path`` as a ``Path``.

    Example::

        >>> atomic_torch_save(net.state_dict(), "models/model.pt")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_torch_file(path: str | os.PathLike, what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Args:
        path: the file.
        what: what the file should hold, for the messages (``"checkpoint"``, ``"guard file"``).
        map_location: as for ``torch.load``.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: When ``path`` is not a file.
        CorruptFileError: When the file is empty or ``torch.load`` cannot read it (the cause is chained).

    Example::

        >>> state = load_torch_file("models/model.pt", "checkpoint")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found.")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{what} {str(path)!r} is empty (0 bytes): an interrupted write? Write it again.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler raises EOFError, RuntimeError, UnpicklingError, OSError, ... by cause
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CorruptFileError(
            f"{what} {str(path)!r} cannot be read: it is truncated, corrupt or not a PyTorch file "
            f"({type(e).__name__}: {reason}). Write it again."
        ) from e
