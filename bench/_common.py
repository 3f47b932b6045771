# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Helpers shared by the benchmark scripts: machine description, min-over-repeats timing, and writing one
``## Section`` of ``bench/README.md`` without touching the others."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["BENCH_DIR", "MinTimer", "machine_info", "replace_readme_section", "write_json"]

BENCH_DIR = Path(__file__).resolve().parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(packages: tuple[str, ...] = ("torch", "monai", "torchattacks", "adversarial-robustness-toolbox")) -> dict:
    """What the numbers were measured on: CPU / GPU, threads, load, Python and package versions, date (UTC)."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_avg_1min_at_start"] = round(os.getloadavg()[0], 2)
    info.update({name: _version(name) for name in packages})
    return info


class MinTimer:
    """Timing that keeps, per key, the minimum over repeats of both the wall-clock seconds and the process CPU
    seconds per call. On a shared machine the CPU time of a single-threaded run is the robust measure: other
    processes stretch the wall clock, not the CPU time this process spends.

    Example::

        >>> t = MinTimer()
        >>> out = t.time("noop", lambda: 1)
        >>> t.best["noop"] >= 0 and t.best_cpu["noop"] >= 0
        True
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.best: dict[str, float] = {}
        self.best_cpu: dict[str, float] = {}
        self.runs: dict[str, list[tuple[float, float]]] = {}
        self._sync = sync or (torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None))

    def time(self, key: str, fn: Callable[[], Any], per_call: int = 1) -> Any:
        """Runs ``fn`` ``per_call`` times, records wall and CPU seconds per call under ``key``, returns the last output."""
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(per_call):
            out = fn()
        self._sync()
        wall, cpu = (time.perf_counter() - wall) / per_call, (time.process_time() - cpu) / per_call
        self.runs.setdefault(key, []).append((wall, cpu))
        self.best[key] = min(self.best.get(key, float("inf")), wall)
        self.best_cpu[key] = min(self.best_cpu.get(key, float("inf")), cpu)
        return out


def write_json(path: Path, payload: dict) -> None:
    """Writes ``payload`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def replace_readme_section(readme: Path, heading: str, body: str, title: str = "# Benchmarks") -> None:
    """Replaces the ``## heading`` section of ``readme`` (up to the next ``## `` heading) with ``body``, or appends it;
    other sections are kept as they are. Creates the file with ``title`` when missing."""
    text = readme.read_text() if readme.is_file() else f"{title}\n\n"
    section = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text.rstrip("\n") + "\n")

