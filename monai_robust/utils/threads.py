# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""How many CPU threads torch should use, and OpenMP waiting that does not collapse when the cores are shared.

PyTorch's CPU kernels run on an OpenMP thread team, one thread per core by default. Between parallel regions the
team *spin-waits*; when other processes already keep the cores busy, spinning threads steal the time the working
thread needs and a job can take many times its idle wall time (measured: the README's main job, 145 s idle, took
56 min under a load of 8-15 on 2 cores). Two remedies, both here:

* fewer threads: :func:`default_num_threads` counts the cores this process may use (``os.sched_getaffinity``) and
  leaves out the ones the 1-minute load average says are busy; :func:`set_num_threads` applies it. One thread has no
  team to wait for. This works at any time, also inside ``python -m monai.bundle run`` (the bundles' ``num_threads``).
* passive waiting: ``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep instead of spin. The OpenMP runtime
  reads it once, when torch is first imported: :func:`passive_openmp_env` sets it (unless the user did) and must
  run before ``import torch``, at an entry point we control; ``bench/oversubscription.py`` measures both.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import MutableMapping

__all__ = ["add_num_threads_argument", "available_cores", "default_num_threads", "passive_openmp_env", "set_num_threads"]


def available_cores() -> int:
    """The number of CPU cores this process may run on: its affinity mask (``taskset``, container cpusets), else
    ``os.cpu_count()``.

    Example::

        >>> available_cores() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_threads(load_aware: bool = True) -> int:
    """The threads a CPU job should use: ``OMP_NUM_THREADS`` when the user set it; otherwise the cores this process
    may use (:func:`available_cores`), minus the ones the 1-minute load average says other work keeps busy, at least 1.

    Call it before the job starts: the load average then counts other processes, not this one.

    Args:
        load_aware: subtract the load average (where ``os.getloadavg`` exists); ``False``: all available cores.

    Returns:
        An integer >= 1.

    Example::

        >>> 1 <= default_num_threads() <= available_cores()
        True
    """
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cores = available_cores()
    if not load_aware or not hasattr(os, "getloadavg"):
        return cores
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    # the load average is system-wide: scale it to the share of the machine's cores this process may use
    busy = load * cores / max(os.cpu_count() or cores, cores)
    return max(1, min(cores, cores - math.floor(busy)))


def set_num_threads(num_threads: int | None = None) -> int:
    """Sets torch's intra-op CPU threads (``torch.set_num_threads``).

    Args:
        num_threads: a positive number of threads; ``None`` or ``0``: :func:`default_num_threads`.

    Returns:
        The number of threads set.

    Raises:
        ValueError: When ``num_threads`` is negative or not an integer.

    Example::

        >>> set_num_threads(1)
        1
    """
    if num_threads is not None and (not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 0):
        raise ValueError(f"num_threads must be a positive integer, or 0/None for the default, got num_threads={num_threads!r}.")
    import torch  # here, not at module level: passive_openmp_env must be importable before torch is loaded

    n = num_threads or default_num_threads()
    torch.set_num_threads(n)
    return n


def passive_openmp_env(environ: MutableMapping[str, str] | None = None) -> bool:
    """Makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``; for Intel's runtime also
    ``KMP_BLOCKTIME=0``), unless the environment already says otherwise. Takes effect only when called before
    torch (its OpenMP runtime) is loaded; child processes inherit it.

    Args:
        environ: the environment to change (default ``os.environ``).

    Returns:
        ``True`` when passive waiting is in effect for a runtime loaded from now on (set here or already set), ``False``
        when the environment asks for another policy (it is left alone).

    Example::

        >>> env = {}
        >>> passive_openmp_env(env), env["OMP_WAIT_POLICY"]
        (True, 'PASSIVE')
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("KMP_BLOCKTIME", "0")
    return env["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def add_num_threads_argument(parser: argparse.ArgumentParser, default: int = 0) -> argparse.ArgumentParser:
    """Adds ``--num-threads N`` to a command line; pass the parsed value to :func:`set_num_threads` before the work
    starts.

    Args:
        parser: the command's parser (or subparser).
        default: the value without the flag; ``0``: :func:`default_num_threads`.

    Returns:
        ``parser``.
    """
    parser.add_argument("--num-threads", type=int, default=default, metavar="N",
                        help=f"CPU threads for torch (default {default}; 0: the cores this process may use, fewer when "
                             "the machine is loaded)")
    return parser
