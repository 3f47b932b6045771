# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Reading and writing a bundle's checkpoints: plain ``state_dict``s, MONAI/Ignite's ``{"model": ...}``, DDP states,
and hardened checkpoints that carry the record of the sparsity blocks inserted into ``network_def``.

One hardened format for both writers, ``monai-robust harden`` (:func:`save_hardened`) and a bundle's own
``configs/harden.json`` (its ``ResumableTraining`` handler packs the weights with :func:`hardened_state`):
``{"model": state_dict, "blocks": record}`` (``"blocks"`` only when blocks were inserted). :func:`load_weights` reads
it into the plain ``network_def`` of any config, inserting the recorded blocks first; MONAI's ``CheckpointLoader``
(``load_dict={"model": net}``) and ``ckpt_export --key_in_ckpt model`` read its weights as they read any
``{"model": ...}`` checkpoint."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_robust.networks.blocks import MeanCentredSparsify, SoftThreshold, TopKSparsify
from monai_robust.networks.utils import insert_blocks

__all__ = ["BLOCKS", "block_record", "hardened_state", "insert_recorded_blocks", "load_weights", "save_hardened"]

BLOCKS = {"topk": TopKSparsify, "soft_threshold": SoftThreshold, "mean_centred": MeanCentredSparsify}
"""Sparsity blocks a hardened checkpoint may name (``networks/blocks``)."""


def insert_recorded_blocks(
    network: nn.Module, record: Mapping[str, Any] | None, spatial_dims: int | None = None
) -> nn.Module:
    """Inserts the blocks a record names (``{"after": [module names], "block": "topk", "kwargs": {"k": 0.2},
    "example_shape": [1, C, *spatial]}``); the example shape lets ``insert_blocks`` measure each block's channels.
    ``record=None`` returns ``network`` unchanged (a config builds its ``network_def`` the same way with or without
    blocks).

    Raises:
        ValueError: For an unknown block name (the known ones listed) or module name (from ``insert_blocks``).

    Example::

        >>> insert_recorded_blocks(net, {"after": ["features.denseblock2"], "block": "topk", "kwargs": {"k": 0.2}}, 2)
    """
    if record is None:
        return network
    name = str(record.get("block"))
    if name not in BLOCKS:
        raise ValueError(f"unknown sparsity block {name!r}; known: {sorted(BLOCKS)}.")
    factory = functools.partial(BLOCKS[name], **dict(record.get("kwargs") or {}))
    shape = record.get("example_shape")
    example = None if not shape else torch.zeros([int(v) for v in shape], device=next(network.parameters()).device)
    return insert_blocks(network, list(record["after"]), factory, example_input=example, spatial_dims=spatial_dims)


def load_weights(
    network: nn.Module, path: str | Path, device: torch.device | str = "cpu", spatial_dims: int | None = None
) -> dict[str, Any] | None:
    """Loads a checkpoint into ``network`` (``weights_only=True``), first inserting the sparsity blocks a hardened
    checkpoint records.

    Args:
        network: ``network_def`` as the config builds it.
        path: the checkpoint: a ``state_dict``, ``{"model": state_dict, ...}`` (MONAI's ``CheckpointSaver``), with
            ``module.`` prefixes (DDP) or not, or a hardened ``{"model": ..., "blocks": record}``.
        device: ``map_location``.
        spatial_dims: for the blocks' static channel inference.

    Returns:
        The blocks record, or ``None``.

    Raises:
        RuntimeError: When the weights do not fit the network (the message names the file).
        ValueError: When the file holds objects other than tensors (not loadable with ``weights_only=True``).

    Example::

        >>> load_weights(net, "models/model.pt")
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: holds more than weights (e.g. a MetricLogger state) and is not loaded with weights_only=True; "
            "use a checkpoint with only the model (MONAI's key-metric checkpoint, `model_key_metric=*.pt`)."
        ) from e
    blocks = state.get("blocks") if isinstance(state, dict) and isinstance(state.get("blocks"), dict) else None
    if isinstance(state, dict) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if blocks is not None:
        insert_recorded_blocks(network, blocks, spatial_dims)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"{path}: the weights do not fit network_def ({e}).") from e
    return blocks


def hardened_state(state_dict: Mapping[str, torch.Tensor], blocks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of a hardened checkpoint: ``{"model": state_dict, "blocks": record}`` (no ``"blocks"`` without
    blocks); what :func:`load_weights` reads.

    Args:
        state_dict: the hardened network's weights (blocks included).
        blocks: the :func:`block_record` of the inserted sparsity blocks, or ``None``.

    Example::

        >>> torch.save(hardened_state(net.state_dict(), block_record(["layer1"], "topk", [1, 1, 32, 32], k=0.5)), path)
        >>> # in a bundle's harden.json: the ResumableTraining handler's
        >>> # "pack": "$functools.partial(monai_robust.bundle.checkpoint.hardened_state, blocks=@hardened_blocks)"
    """
    out: dict[str, Any] = {"model": dict(state_dict)}
    if blocks:
        out["blocks"] = dict(blocks)
    return out


def save_hardened(network: nn.Module, path: str | Path, blocks: Mapping[str, Any] | None, original: str | Path) -> Path:
    """Writes a hardened checkpoint (:func:`hardened_state`) beside the user's, never over it.

    Raises:
        ValueError: When ``path`` is the original checkpoint.
    """
    path = Path(path)
    if path.resolve() == Path(original).resolve():
        raise ValueError(f"refusing to overwrite the original checkpoint {str(original)!r} with the hardened one.")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(hardened_state(network.state_dict(), blocks), path)
    return path


def block_record(
    after: Sequence[str] | None, block: str = "topk", example_shape: Sequence[int] | None = None, **kwargs: Any
) -> dict[str, Any] | None:
    """The record :func:`save_hardened` writes for blocks after ``after`` (``None`` when no module is named).

    Args:
        after: module names of the network.
        block: a key of :data:`BLOCKS`.
        example_shape: ``(1, C, *spatial)`` of a network input, to measure the blocks' channels.
        **kwargs: the block's arguments.

    Raises:
        ValueError: For an unknown block.
    """
    if not after:
        return None
    if block not in BLOCKS:
        raise ValueError(f"unknown sparsity block {block!r}; known: {sorted(BLOCKS)}.")
    return {"after": list(after), "block": block, "kwargs": dict(kwargs), "example_shape": None if example_shape is None else [int(v) for v in example_shape]}
