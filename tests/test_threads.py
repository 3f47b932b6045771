# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""monai_robust.utils.threads (here, not in tests/utils/: tests/utils.py is the test helpers module)."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from monai_robust.utils import threads


def test_available_cores_is_the_affinity():
    n = threads.available_cores()
    assert n >= 1
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("load,cores,cpus,expected", [(0.0, 2, 2, 2), (0.9, 2, 2, 2), (1.2, 2, 2, 1), (8.0, 2, 2, 1),
                                                      (3.0, 16, 16, 13), (8.0, 4, 16, 2)])
def test_default_subtracts_the_load(monkeypatch, load, cores, cpus, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert threads.default_num_threads() == expected
    assert threads.default_num_threads(load_aware=False) == cores


def test_the_users_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert threads.default_num_threads() == 3


def test_set_num_threads():
    before = torch.get_num_threads()
    try:
        assert threads.set_num_threads(1) == 1 and torch.get_num_threads() == 1
        assert threads.set_num_threads(None) == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            threads.set_num_threads(bad)


def test_passive_env_respects_the_user():
    env: dict[str, str] = {}
    assert threads.passive_openmp_env(env) and env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert not threads.passive_openmp_env(env) and env["OMP_WAIT_POLICY"] == "active"


def test_cli_argument():
    parser = threads.add_num_threads_argument(argparse.ArgumentParser())
    assert parser.parse_args([]).num_threads == 0 and parser.parse_args(["--num-threads", "3"]).num_threads == 3
