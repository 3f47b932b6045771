# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Does ``torch.compile`` work on this CPU, and does it speed up an attack's step (one forward + backward w.r.t. the
input)? A tiny CNN, 64 images 28x28, one thread: eager vs compiled process-CPU seconds over 20 steps and the
difference of the input gradients. Indicative only (inductor compiles in worker processes not counted here).

    python bench/torch_compile.py
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1); torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1,16,3,padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16,32,3,padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32,2)).eval()
x = torch.rand(64,1,28,28); y = torch.randint(0,2,(64,))
def grad(m):
    xx = x.clone().requires_grad_(True)
    F.cross_entropy(m(xx), y).backward()
    return xx.grad
t=time.process_time(); g0 = grad(net); [grad(net) for _ in range(20)]; eager=time.process_time()-t
try:
    c = torch.compile(net)
    t=time.process_time(); g1 = grad(c); first=time.process_time()-t
    t=time.process_time(); [grad(c) for _ in range(20)]; comp=time.process_time()-t
    print(f"compile ok: first call {first:.1f} CPU s; 20 fwd+bwd eager {eager:.2f} vs compiled {comp:.2f} CPU s; "
          f"max |grad diff| {float((g0-g1).abs().max()):.2e}; sign agreement {float((g0.sign()==g1.sign()).float().mean()):.4f}")
except Exception as e:
    print("compile failed:", type(e).__name__, str(e)[:500])
