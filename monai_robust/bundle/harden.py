# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``monai-robust harden``: fine-tunes the user's network with PGD adversarial training (Madry et al. 2018) in the
image's stored units, through the bundle's own intensity part, on MONAI's ``SupervisedTrainer`` with
:class:`~monai_robust.engines.training.PGDATIteration`; optional sparsity blocks (Shi et al. 2022) are inserted
first. The result is written beside the user's checkpoint (``models/model_hardened.pt``), never over it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import ProgressBar
from monai.engines import SupervisedTrainer
from monai.handlers import from_engine

from monai_robust.attacks import PGD
from monai_robust.bundle.checkpoint import block_record, insert_recorded_blocks, save_hardened
from monai_robust.bundle.layout import HARDENED_NAME
from monai_robust.bundle.predictor import BundlePredictor
from monai_robust.bundle.stored_units import StoredUnitsModel
from monai_robust.engines.training import PGDATIteration

__all__ = ["harden_bundle"]


def harden_bundle(
    predictor: BundlePredictor,
    loader: Iterable[Any],
    eps: float,
    *,
    epochs: int = 1,
    learning_rate: float = 1e-4,
    num_steps: int = 7,
    clean_weight: float = 0.5,
    blocks: Sequence[str] | None = None,
    block: str = "topk",
    block_kwargs: dict[str, Any] | None = None,
    output: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Adversarially fine-tunes the bundle's network and writes the hardened checkpoint.

    Args:
        predictor: the bundle, loaded from the user's checkpoint.
        loader: labelled training batches in stored units (``bundle_loader``; shuffle them for real runs).
        eps: L∞ training budget in stored units.
        epochs: fine-tuning epochs.
        learning_rate: Adam's learning rate.
        num_steps: PGD steps per batch.
        clean_weight: weight of the clean loss in ``[0, 1)`` (keeps clean accuracy).
        blocks: module names of the network after which sparsity blocks are inserted (``None``: none).
        block: the block (``"topk"``, ``"soft_threshold"``, ``"mean_centred"``).
        block_kwargs: the block's arguments (e.g. ``{"k": 0.2}``).
        output: the checkpoint; default ``models/model_hardened.pt`` beside the user's.
        progress: a tqdm bar per epoch.

    Returns:
        ``{"checkpoint", "epochs", "eps", "blocks", "metrics"}`` (``metrics``: the trainer's last).

    Raises:
        ValueError: When the model has no bounds, ``eps`` is not positive, or ``output`` is the user's checkpoint.

    Example::

        >>> harden_bundle(BundlePredictor("my_bundle"), train_loader, eps=2.0, blocks=["features.denseblock2"])
    """
    bounds = predictor.model.bounds
    if bounds is None:
        raise ValueError("the stored range is unknown: pass --bounds LOW HIGH or declare stored_value_range in metadata.json.")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 stored units, got eps={eps!r}.")
    network = predictor.bundle.network
    shape = [1, predictor.in_channels, *next(iter(loader))["image"].shape[2:]] if blocks else None
    record = block_record(blocks, block, shape, **(block_kwargs or {}))
    if record is not None:
        insert_recorded_blocks(network, record, predictor.spatial_dims)
    model = StoredUnitsModel(network, predictor.split.steps, bounds)
    attack = PGD(model, eps=float(eps), num_steps=num_steps, bounds=bounds)
    trainer = SupervisedTrainer(
        device=predictor.device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=model,
        optimizer=torch.optim.Adam(network.parameters(), lr=learning_rate),
        loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=PGDATIteration(attack, clean_weight=clean_weight),
    )
    if progress:
        loss = from_engine(["loss"], first=True)
        ProgressBar(desc="harden").attach(trainer, output_transform=lambda out: {"loss": float(loss(out))})
    trainer.run()
    network.eval()
    original = predictor.bundle.checkpoint or predictor.bundle.layout.checkpoint
    path = Path(output) if output is not None else Path(original).parent / HARDENED_NAME
    save_hardened(network, path, record, original)
    metrics = {k: float(v) for k, v in trainer.state.metrics.items() if isinstance(v, (int, float))}
    return {"checkpoint": str(path), "epochs": epochs, "eps": float(eps), "blocks": record, "metrics": metrics}
