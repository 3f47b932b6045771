# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Does ``torch.compile`` work on this CPU, and does it speed up an attack's step (one forward + backward w.r.t. the
input)? A tiny CNN, 64 images 28x28, one thread: eager vs compiled process-CPU seconds over 20 steps and the
difference of the input gradients. Indicative only (inductor compiles in worker processes not counted here).

    python bench/torch_compile.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    F.cross_entropy(model(xx), y).backward()
    return xx.grad


def cpu_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 20) -> float:
    t = time.process_time()
    for _ in range(steps):
        input_grad(model, x, y)
    return time.process_time() - t


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    ).eval()
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 2, (64,))
    g0 = input_grad(net, x, y)
    eager = cpu_seconds(net, x, y)
    try:
        compiled = torch.compile(net)
        t = time.process_time()
        g1 = input_grad(compiled, x, y)
        first = time.process_time() - t
        comp = cpu_seconds(compiled, x, y)
    except Exception as e:  # report it either way
        print("torch.compile failed:", type(e).__name__, str(e)[:500])
        return
    same = float((g0.sign() == g1.sign()).float().mean())
    print(f"torch.compile works: first call {first:.1f} CPU s; 20 fwd+bwd eager {eager:.2f} vs compiled {comp:.2f} "
          f"CPU s; max |grad diff| {float((g0 - g1).abs().max()):.2e}; gradient signs equal {same:.4f}")


if __name__ == "__main__":
    main()
