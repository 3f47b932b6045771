# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Loading any model-zoo classification bundle (JSON or YAML) with MONAI's ``ConfigParser``: ``network_def`` with
its checkpoint, the ``preprocessing`` its inference config spells out, class names and metadata, with MONAI-style
overrides (``{"network_def#spatial_dims": 2, "ckpt_path": "..."}``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_robust.bundle.checkpoint import load_weights
from monai_robust.bundle.layout import HARDENED_NAME, BundleLayout

__all__ = ["CHECKPOINT_IDS", "PREPROCESSING_IDS", "LoadedBundle", "load_bundle"]

CHECKPOINT_IDS = ("ckpt_path", "ckpt_file", "checkpointloader#load_path")
"""Config ids that name the checkpoint, in the order they are looked for (zoo bundles use each of them)."""

PREPROCESSING_IDS = ("preprocessing", "validate#preprocessing", "val_preprocessing", "inference#dataset#transform")
"""Config ids of the inference preprocessing, in the order they are looked for."""


@dataclass
class LoadedBundle:
    """A bundle read and instantiated: what every ``monai-robust`` command works from.

    Attributes:
        layout: the bundle's folder layout.
        parser: MONAI's ``ConfigParser`` with the configs, metadata (``_meta_``) and overrides.
        network: ``network_def`` with the checkpoint loaded, on ``device``, in eval mode.
        preprocessing: the parsed inference preprocessing (a MONAI ``Compose``).
        preprocessing_id: the config id it was read from.
        image_key: the image key of its dictionary transforms.
        class_names: one name per output.
        metadata: ``configs/metadata.json`` (empty when absent).
        checkpoint: the weights file loaded (``None`` when not loaded).
        device: where the network lives.
        blocks: the sparsity blocks a hardened checkpoint inserted (see :mod:`monai_robust.bundle.checkpoint`).
    """

    layout: BundleLayout
    parser: ConfigParser
    network: nn.Module
    preprocessing: Any
    preprocessing_id: str
    image_key: str
    class_names: list[str]
    metadata: dict[str, Any]
    checkpoint: Path | None
    device: torch.device
    blocks: dict[str, Any] | None = None
    config_files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.layout.root.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    @property
    def spatial_dims(self) -> int:
        """``network_def#spatial_dims``, else the rank of the metadata's input ``spatial_shape``, else 2."""
        if "network_def#spatial_dims" in self.parser:
            return int(self.parser.get_parsed_content("network_def#spatial_dims"))
        shape = _input_format(self.metadata).get("spatial_shape") or [0, 0]
        return len(shape)

    @property
    def in_channels(self) -> int:
        """``network_def#in_channels``, else the first convolution's input channels."""
        if "network_def#in_channels" in self.parser:
            return int(self.parser.get_parsed_content("network_def#in_channels"))
        for m in self.network.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                return int(m.in_channels)
        raise ValueError(f"cannot tell the input channels of {type(self.network).__name__}: set network_def#in_channels.")

    def get(self, config_id: str, default: Any = None) -> Any:
        """The parsed content of ``config_id``, or ``default`` when the config does not define it."""
        return self.parser.get_parsed_content(config_id) if config_id in self.parser else default


def _input_format(metadata: Mapping[str, Any]) -> dict[str, Any]:
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    return dict(inputs.get("image", next(iter(inputs.values()), {}))) if inputs else {}


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e


def _config_files(layout: BundleLayout, config_file: str | Path | None) -> list[Path]:
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found.")
        return [path]
    inference = layout.config("inference")
    if "network_def" in ConfigParser.load_config_file(str(inference)):
        return [inference]
    train = layout.find_config("train")  # an overlay inference config (MONAI's "['train.json','inference.json']")
    if train is None:
        raise ValueError(f"{inference}: defines no 'network_def' and the bundle has no train config to add it.")
    return [train, inference]


def _checkpoint(parser: ConfigParser, layout: BundleLayout, checkpoint: str | Path | None) -> tuple[Path, str]:
    if checkpoint is not None:
        return Path(checkpoint), "ckpt_path"
    for config_id in CHECKPOINT_IDS:
        if config_id in parser:
            return Path(parser.get_parsed_content(config_id)), config_id
    return layout.checkpoint, "ckpt_path"


def _class_names(parser: ConfigParser, metadata: Mapping[str, Any]) -> list[str] | None:
    if "class_names" in parser:
        return [str(c) for c in parser.get_parsed_content("class_names")]
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    pred = outputs.get("pred", next(iter(outputs.values()), {})) if outputs else {}
    channel_def = pred.get("channel_def") or {}
    try:
        return [str(channel_def[k]) for k in sorted(channel_def, key=int)] or None
    except ValueError:
        return None


def load_bundle(
    bundle_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    preprocessing_id: str | None = None,
    weights: bool = True,
    prefer_hardened: bool = False,
) -> LoadedBundle:
    """Reads a model-zoo classification bundle and builds its network with the checkpoint loaded.

    The inference config (``configs/inference.json|yaml``) is the single source of truth; when it is an overlay
    without ``network_def`` (older bundles of this project), the train config is read first, as MONAI's
    ``--config_file "['train.json','inference.json']"`` does.

    Args:
        bundle_dir: the bundle folder.
        overrides: config ids to override, as on MONAI's command line (``{"network_def#spatial_dims": 2}``).
            ``bundle_root`` defaults to ``bundle_dir``.
        config_file: another config file to read instead of the inference config.
        checkpoint: the weights; default the config's ``ckpt_path`` / ``ckpt_file`` /
            ``checkpointloader#load_path``, else ``models/model.pt``.
        device: default the config's ``device``, else CUDA when available.
        preprocessing_id: the config id of the preprocessing; default the first of :data:`PREPROCESSING_IDS`.
        weights: load the checkpoint (``False``: the untrained ``network_def``, e.g. to train it).
        prefer_hardened: with ``checkpoint=None``, load ``model_hardened.pt`` when ``monai-robust harden`` or the
            bundle's own harden config wrote one beside the config's checkpoint, with the sparsity blocks its record
            names (:mod:`monai_robust.bundle.checkpoint`).

    Returns:
        The :class:`LoadedBundle`.

    Raises:
        FileNotFoundError: When a config or the checkpoint is missing; the message names the config id to set.
        ValueError: When the config has no preprocessing among the ids tried.
        RuntimeError: When the checkpoint (or the preferred hardened one) does not fit ``network_def``.

    Example::

        >>> b = load_bundle("endoscopic_inbody_classification", {"network_def#spatial_dims": 2}, device="cpu")
        >>> b.class_names
        ['in body', 'out body']
    """
    layout = BundleLayout(bundle_dir)
    files = _config_files(layout, config_file)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if layout.metadata.is_file():
        parser.read_meta(str(layout.metadata))
    metadata = _read_metadata(layout.metadata)
    parser.update({"bundle_root": str(layout.root), **dict(overrides or {})})
    if device is not None:
        parser["device"] = torch.device(device)
    dev = torch.device(parser.get_parsed_content("device")) if "device" in parser else torch.device("cpu")
    ckpt, ckpt_id = _checkpoint(parser, layout, checkpoint)
    hardened = ckpt.parent / HARDENED_NAME if prefer_hardened and checkpoint is None else None
    if weights and not ckpt.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(ckpt)!r} not found (config id `{ckpt_id}`): train the bundle first, or point it at the "
            f"weights with `--{ckpt_id} PATH`."
        )
    ids = [preprocessing_id] if preprocessing_id else list(PREPROCESSING_IDS)
    found = next((i for i in ids if i in parser), None)
    if found is None:
        raise ValueError(f"{files[-1]}: no preprocessing under the config ids {ids}; name it with preprocessing_id.")
    network = parser.get_parsed_content("network_def", instantiate=True)
    blocks = None
    if weights:
        dims = parser.get_parsed_content("network_def#spatial_dims") if "network_def#spatial_dims" in parser else None
        if hardened is not None and hardened.is_file():
            try:
                blocks, ckpt = load_weights(network, hardened, dev, dims), hardened
            except RuntimeError as e:  # e.g. written by a harden config before checkpoints carried their blocks
                raise RuntimeError(
                    f"{e} It is preferred as the hardened checkpoint: rerun the harden stage (its checkpoint then "
                    f"carries the record of its sparsity blocks), or load the original with hardened=False "
                    f"(`--checkpoint {ckpt}`)."
                ) from e
        else:
            blocks = load_weights(network, ckpt, dev, dims)
    network = network.to(dev).eval()
    image_key = str(parser.get_parsed_content("image_key")) if "image_key" in parser else "image"
    names = _class_names(parser, metadata)
    return LoadedBundle(
        layout=layout,
        parser=parser,
        network=network,
        preprocessing=parser.get_parsed_content(found),
        preprocessing_id=found,
        image_key=image_key,
        class_names=names or [],
        metadata=metadata,
        checkpoint=ckpt if weights else None,
        device=dev,
        blocks=blocks,
        config_files=files,
    )
