# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The data-parallel overlays ``multi_gpu_harden.json`` and ``multi_gpu_evaluate.json``, launched with ``torchrun``
on 2 CPU processes (gloo), as CI runs them: one call trains, hardens and evaluates, and its robustness evaluation
equals the single-process evaluation of the checkpoint it saved (every test image counted exactly once).

Hardened weights are not compared: DDP averages the gradients of two half batches and BatchNorm normalises each
half with its own statistics, so they legitimately differ from a single-process run. The evaluation attacks are FGSM
and BIM (PGD without random start): PGD's random start is drawn for a whole batch, so its result depends on how the
test set is split into batches, and a 2-rank run splits it differently.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ignite import distributed as idist
from monai.bundle import ConfigWorkflow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
XRAY = BUNDLES / "robust_xray_classification" / "configs"
CT = BUNDLES / "robust_ct_classification" / "configs"
TINY = {"num_images": 48, "image_size": 32, "batch_size": 8, "num_epochs": 1, "harden_epochs": 1}
EVAL = {  # batch-split-independent attacks, and budgets large enough to break some images of a barely trained model
    "eval_eps": "$[e / 255 * (@bounds[1] - @bounds[0]) for e in (2, 16, 64)]",
    "evaluate#attacks": {
        "FGSM": "$monai_robust.attacks.FGSM(@network, bounds=@bounds)",
        "BIM-5": "$monai_robust.attacks.BIM(@network, num_steps=5, bounds=@bounds)",
    },
}

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is unavailable"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(configs: list[Path], root: Path, log: Path) -> None:
    """``torchrun --nproc_per_node=2 -m monai.bundle run`` on the CPU (gloo), one thread per process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "monai.bundle", "run",
           "--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]", "--meta_file", str(XRAY / "metadata.json"),
           "--logging_file", str(XRAY / "logging.conf"), "--bundle_root", str(root)]
    for k, v in TINY.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:  # a collective that never completes: stop torchrun and both ranks
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    errors = [line for line in log.read_text().splitlines() if "Error" in line or "rank0]: " in line]
    assert rc == 0, f"torchrun failed (rc={rc}), see {log}:\n" + "\n".join(errors[-30:])


def _rows(report: dict) -> dict:
    """The decision-based numbers of a report, per (attack, eps): they must not depend on how the data was split."""
    keys = ("status", "accuracy", "sensitivity", "specificity", "attack_success_rate", "n_attacked")
    rows = {"n": report["meta"]["n"], "clean": report["clean"]["accuracy"]}
    for name, a in report["attacks"].items():
        for r in a["results"]:
            rows[f"{name}@{r['eps']:.6g}"] = {k: r.get(k) for k in keys}
    return rows


def test_xray_torchrun_equals_single_process(tmp_path: Path) -> None:
    # 2 processes, one call: train + harden + evaluate in a fresh folder (rank 0 generates the embedded data)
    tiny_eval = tmp_path / "tiny_eval.json"
    tiny_eval.write_text(json.dumps(EVAL))
    root, chain = tmp_path / "bundle", [XRAY / "train.json", XRAY / "harden.json", XRAY / "evaluate.json", tiny_eval]
    _torchrun(chain + [XRAY / "multi_gpu_harden.json", XRAY / "multi_gpu_evaluate.json"], root, tmp_path / "ddp.log")
    state = torch.load(root / "models" / "model_hardened.pt", map_location="cpu", weights_only=True)["model"]
    assert state and not any(k.startswith("module.") for k in state), "the checkpoint must hold the unwrapped model"
    events = list((root / "outputs" / "tensorboard").rglob("events.out.tfevents.*"))  # ...<time>.<host>.<pid>.<n>
    assert events and len({e.name.split(".")[-2] for e in events}) == 1, f"TensorBoard written by 2 ranks: {events}"
    multi = json.loads((root / "outputs" / "report" / "robustness.json").read_text())
    assert (root / "outputs" / "report" / "index.html").is_file()

    # 1 process: the robustness evaluation of the checkpoint the 2 processes evaluated (stages [] loads it)
    wf = ConfigWorkflow(config_file=[str(c) for c in chain], meta_file=str(XRAY / "metadata.json"),
                        logging_file=str(XRAY / "logging.conf"), workflow_type=None, bundle_root=str(root),
                        output_dir=str(tmp_path / "single"), stages=[], **TINY)
    wf.initialize()
    wf.run()
    wf.finalize()
    single = json.loads((tmp_path / "single" / "report" / "robustness.json").read_text())
    assert multi["meta"]["n"] == len(json.loads((root / "data" / "dataset.json").read_text())["test"])
    assert _rows(multi) == _rows(single)
    assert multi["clean"]["auc"] == pytest.approx(single["clean"]["auc"])


def test_ct_overlays_evaluate_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3D bundle's overlays on a 1-process gloo group (in this process): they resolve, and the evaluation of a
    saved checkpoint loads it into the DDP network, evaluates its module and writes the report."""
    configs = ["train.json", "harden.json", "evaluate.json", "multi_gpu_harden.json", "multi_gpu_evaluate.json"]
    override = {"num_images": 16, "image_size": 16, "batch_size": 4, "stages": [], "eval_eps": [0.01],
                "evaluate#attacks": {"FGSM": "$monai_robust.attacks.FGSM(@network, bounds=@bounds)"}}
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wf = ConfigWorkflow(config_file=[str(CT / c) for c in configs], meta_file=str(CT / "metadata.json"),
                            logging_file=str(CT / "logging.conf"), workflow_type=None, bundle_root=str(tmp_path),
                            **override)
        wf.initialize()
        network = wf.parser.get_parsed_content("network")
        assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
        for loader, shuffle in (("train#dataloader", True), ("validate#dataloader", False),
                                ("evaluate#dataloader", False)):
            sampler = wf.parser.get_parsed_content(loader).sampler
            assert isinstance(sampler, torch.utils.data.DistributedSampler) and sampler.shuffle is shuffle
        assert wf.parser.get_parsed_content("harden#trainer").network is network
        ckpt = Path(wf.parser.get_parsed_content("ckpt_file"))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.clone() for k, v in network.module.state_dict().items()}
        bias = [k for k in state if k.endswith("bias")][-1]  # the classifier's: every image predicted as class 0
        state[bias] = torch.tensor([50.0, -50.0])
        torch.save({"model": state}, ckpt)
        wf.run()
        evaluator = wf.parser.get_parsed_content("evaluate#evaluator")
        assert evaluator.network is network.module  # evaluated without DDP's collectives
        assert torch.equal(network.module.state_dict()[bias], state[bias])  # the checkpoint was loaded into DDP
        report = json.loads((tmp_path / "outputs" / "report" / "robustness.json").read_text())
        test = json.loads((tmp_path / "data" / "dataset.json").read_text())["test"]
        assert report["meta"]["n"] == len(test)
        assert report["clean"]["accuracy"] == pytest.approx(sum(int(t["label"]) == 0 for t in test) / len(test))
        wf.finalize()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        idist.sync()  # ignite back to its serial model for the tests that follow


@pytest.mark.parametrize("configs", [XRAY, CT], ids=["xray", "ct"])
def test_overlays_switch_off_exactly_the_writers(configs: Path) -> None:
    """The overlays switch handlers off on ranks > 0 by position: every logging/writing handler of the workflows
    (checkpoints, TensorBoard, report, console, progress bar) and nothing else (every rank validates and loads checkpoints).
    ``ResumableTraining`` (``train#checkpoint``, referenced from the list) stays on: every rank resumes, rank 0 writes."""
    writers = {"StatsHandler", "TensorBoardStatsHandler", "CheckpointSaver", "RobustnessReport",
               "RobustnessTensorBoard", "AttackProgress"}
    merged: dict = {}
    for name in ("train.json", "harden.json", "evaluate.json"):
        merged.update(json.loads((configs / name).read_text()))
    expected = {
        f"{section}#handlers#{i}#_disabled_"
        for section in ("train", "validate", "harden", "evaluate")
        for i, h in enumerate(merged[section]["handlers"])
        if isinstance(h, dict) and h["_target_"].split(".")[-1] in writers
    }
    disabled = set()
    for overlay in ("multi_gpu_harden.json", "multi_gpu_evaluate.json"):
        items = json.loads((configs / overlay).read_text()).items()
        disabled |= {k for k, v in items if k.endswith("#_disabled_") and v == "$dist.get_rank() > 0"}
    assert disabled == expected
