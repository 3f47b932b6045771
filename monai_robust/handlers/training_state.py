# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Checkpoint files of training runs: :class:`ResumableTraining` (a run that can be killed at any moment and continued
from its last complete epoch, whose model file appears only when the run is complete) and
:class:`CheckedCheckpointLoader` (MONAI's loader, with an error that names an unreadable file)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_robust.utils.files import atomic_torch_save, load_torch_file

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["CheckedCheckpointLoader", "ResumableTraining"]

logger = logging.getLogger(__name__)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def _unwrap(module: Any) -> Any:
    return module.module if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else module


class ResumableTraining:
    """Atomic, resumable checkpoints for a MONAI ``SupervisedTrainer``: after every epoch the whole training state
    (network, optimizer, the trainer's epoch, anything in ``save_dict``, and the best network so far) is written to
    ``state_file`` (temporary file + ``os.replace``, so a kill leaves the previous epoch's state); at ``STARTED`` an
    existing ``state_file`` is loaded, so a rerun continues after its last complete epoch; at ``COMPLETED`` the
    final weights are written to ``model_file`` (atomically) and ``state_file`` is removed. An interrupted run
    therefore never leaves a file at ``model_file``, and a completed one leaves no state behind.

    With a ``validator`` (the evaluator of MONAI's ``ValidationHandler``), ``model_file`` receives the weights of the
    epoch with the best key validation metric, as ``CheckpointSaver(save_key_metric=True)`` would keep; without one,
    the weights at the end of training. The random streams are not saved: a resumed run draws other data orders and
    augmentations than an uninterrupted one would.

    Attach it after the handlers that change the network at the end of an epoch (validation, precise BN). In a
    distributed run every rank resumes and only rank 0 writes.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is unwrapped).
        state_file: where the training state is kept while the run is incomplete.
        model_file: the final weights (a ``state_dict``); ``None`` writes none (a stage whose result the next stage
            writes).
        save_dict: further objects with ``state_dict``/``load_state_dict`` to save and restore (e.g. the optimizer,
            an LR scheduler), by name.
        validator: the evaluator whose ``state.best_metric`` picks the weights for ``model_file``.
        resume: continue from an existing ``state_file`` (``False``: start over and overwrite it).
        pack: what ``model_file`` holds, as a function of the final ``state_dict`` (default: the ``state_dict``
            itself), e.g. a hardened checkpoint with the record of its sparsity blocks
            (``functools.partial(monai_robust.bundle.checkpoint.hardened_state, blocks=record)``).

    Raises:
        ValueError: When ``network`` is not an ``nn.Module`` or a ``save_dict`` entry has no ``state_dict``; at the
            start of a run, when ``state_file`` is empty, truncated, not a PyTorch file, or written by another
            network, optimizer or epoch length (the file is named; delete it to start over).

    Example::

        >>> resume = ResumableTraining(net, "models/model.pt.state", "models/model.pt", {"optimizer": opt}, evaluator)
        >>> trainer = SupervisedTrainer(..., train_handlers=[ValidationHandler(1, evaluator), resume])
    """

    def __init__(
        self,
        network: nn.Module,
        state_file: str | os.PathLike,
        model_file: str | os.PathLike | None = None,
        save_dict: Mapping[str, Any] | None = None,
        validator: Any = None,
        resume: bool = True,
        pack: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be an nn.Module, got {type(network).__name__}.")
        if pack is not None and not callable(pack):
            raise ValueError(f"pack must be callable (state_dict -> what model_file holds), got {pack!r}.")
        save_dict = dict(save_dict or {})
        bad = [k for k, v in save_dict.items() if not callable(getattr(v, "state_dict", None))]
        if bad or {"network", "trainer", "best"} & set(save_dict):
            raise ValueError(
                f"save_dict entries need state_dict()/load_state_dict() and may not be named network, trainer or "
                f"best, got {sorted(save_dict)} (without state_dict: {bad})."
            )
        self.network = network
        self.state_file = Path(state_file)
        self.model_file = None if model_file is None else Path(model_file)
        if self.model_file is not None and self.model_file.resolve() == self.state_file.resolve():
            raise ValueError(f"state_file and model_file must differ, got {str(self.state_file)!r} for both.")
        self.save_dict = save_dict
        self.validator = validator
        self.resume = bool(resume)
        self.pack = pack
        self.resumed_from: int | None = None
        self._best: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Loads at ``STARTED``, saves at ``EPOCH_COMPLETED``, writes the model at ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.complete)

    def load(self, engine: Engine) -> None:
        """Restores the state of the last complete epoch when ``state_file`` exists (and ``resume``)."""
        self._best, self.resumed_from = None, None
        if not self.resume or not self.state_file.exists():
            return
        state = load_torch_file(self.state_file, "training state", map_location="cpu")
        if not isinstance(state, dict) or not {"network", "trainer"} <= set(state):
            raise ValueError(f"training state {str(self.state_file)!r} is not a ResumableTraining state: delete it.")
        prior_max_epochs = engine.state.max_epochs
        try:
            _unwrap(self.network).load_state_dict(state["network"])
            for name, obj in self.save_dict.items():
                obj.load_state_dict(state[name])
            saved_length = state["trainer"].get("epoch_length")
            if engine.state.epoch_length is not None and saved_length not in (None, engine.state.epoch_length):
                raise ValueError(f"it was written with {saved_length} iterations per epoch, this run has "
                                 f"{engine.state.epoch_length} (another dataset or batch size)")
            engine.load_state_dict(state["trainer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ValueError(
                f"training state {str(self.state_file)!r} does not fit this run ({e}); delete it to start over."
            ) from e
        engine.state.max_epochs = prior_max_epochs
        self._best = state.get("best")
        if self.validator is not None and self._best is not None:
            self.validator.state.best_metric = self._best["metric"]
            self.validator.state.best_metric_epoch = self._best["epoch"]
        self.resumed_from = int(engine.state.epoch)
        logger.info("resuming from %s after epoch %d of %s", self.state_file, engine.state.epoch, prior_max_epochs)

    def save(self, engine: Engine) -> None:
        """Writes the state of the epoch just completed (rank 0), keeping the best weights so far."""
        network = _unwrap(self.network)
        if self.validator is not None and self.validator.state.best_metric_epoch == engine.state.epoch:
            self._best = {
                "network": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
                "metric": float(self.validator.state.best_metric),
                "epoch": int(engine.state.epoch),
            }
        if _rank() > 0:
            return
        state = {
            "network": network.state_dict(),
            "trainer": engine.state_dict(),
            **{name: obj.state_dict() for name, obj in self.save_dict.items()},
        }
        if self._best is not None:
            state["best"] = self._best
        atomic_torch_save(state, self.state_file)

    def complete(self, engine: Engine) -> None:
        """Writes ``model_file`` (rank 0) and removes ``state_file``."""
        if _rank() > 0:
            return
        if self.model_file is not None:
            weights = self._best["network"] if self._best is not None else _unwrap(self.network).state_dict()
            atomic_torch_save(weights if self.pack is None else self.pack(weights), self.model_file)
            logger.info("training complete: %s written", self.model_file)
        self.state_file.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_file={str(self.state_file)!r}, model_file={self.model_file!r})"


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` that first reads ``load_path`` with
    :func:`~monai_robust.utils.files.load_torch_file`, so that a missing, empty, truncated or foreign file is an error
    naming it (``FileNotFoundError`` / :class:`~monai_robust.utils.files.CorruptFileError`) instead of the
    unpickler's. Same arguments as ``CheckpointLoader``; the file is read twice (checked, then loaded).

    Example::

        >>> CheckedCheckpointLoader(load_path="models/model.pt", load_dict={"model": net}).attach(evaluator)
    """

    def __call__(self, engine: Engine) -> None:
        """Checks ``load_path``, then loads it as ``CheckpointLoader`` does."""
        load_torch_file(self.load_path, "checkpoint", map_location="cpu")
        super().__call__(engine)
