# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import pytest
import torch

from monai_robust.attacks.fgsm import FGSM
from monai_robust.engines.evaluator import ProbeOptions, RobustnessEvaluator
from monai_robust.handlers.tensorboard_images import RobustnessTensorBoard, example_grid
from tests.utils import SmallCNN


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread avoids oversubscribing the 2 shared CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



class FakeWriter:
    def __init__(self) -> None:
        self.scalars, self.images = {}, {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)

    def add_images(self, tag, images, step, dataformats="NCHW"):
        self.images[tag] = images

    def flush(self):
        pass


def test_example_grid_range_and_order():
    clean, adv = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.1)
    grid = example_grid(clean, adv, (0.0, 1.0))
    assert grid.shape == (6, 1, 4, 4) and grid.min() >= 0 and grid.max() <= 1
    assert torch.allclose(grid[1], torch.ones(1, 4, 4)) and torch.allclose(grid[2], adv[0])


def test_scalars_and_images_2d_3d(tmp_path):
    for dims in (2, 3):
        torch.manual_seed(0)
        net = SmallCNN(dims, 1, 2, width=4).eval()
        data = [{"image": torch.rand((8, 1) + (8,) * dims), "label": torch.randint(0, 2, (8,))}]
        writer = FakeWriter()
        ev = RobustnessEvaluator("cpu", data, net, {"fgsm": FGSM(net, bounds=(0.0, 1.0))}, [0.1], probe_options=ProbeOptions(enabled=False))
        RobustnessTensorBoard(writer).attach(ev)
        ev.run()
        assert writer.scalars["robustness/clean/accuracy"] == (ev.results["clean"]["accuracy"], 1)
        assert writer.scalars["robustness/fgsm/accuracy/eps=0.1"][0] == ev.results["attacks"]["fgsm"]["results"][0]["accuracy"]
        grid = writer.images["robustness/examples/fgsm@0.1"]
        assert grid.shape == (12, 1, 8, 8)  # 4 examples x (clean, delta, adversarial); 3D: middle slice


def test_real_summary_writer(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(2, 1, 2, width=4).eval()
    data = [{"image": torch.rand(4, 1, 8, 8), "label": torch.randint(0, 2, (4,))}]
    ev = RobustnessEvaluator("cpu", data, net, {"fgsm": FGSM(net, bounds=(0.0, 1.0))}, [0.1], probe_options=ProbeOptions(enabled=False))
    handler = RobustnessTensorBoard(log_dir=str(tmp_path))
    handler.attach(ev)
    ev.run()
    handler.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
