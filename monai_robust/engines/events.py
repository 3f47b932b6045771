# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Custom Ignite events fired by the robustness engines around the crafting of adversarial inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
else:
    EventEnum, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum", as_type="base"
    )
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["RobustEvents", "register_robust_events"]


class RobustEvents(EventEnum):
    """Events of an iteration that crafts adversarial inputs (ignite ``EventEnum``, like MONAI's
    ``IterationEvents``).

    ``ATTACK_STARTED`` fires just before the attack runs on the batch, ``ATTACK_COMPLETED`` right after it,
    with the adversarial inputs available to handlers in ``engine.state.output`` only once the iteration ends.

    Example::

        >>> from ignite.engine import Engine
        >>> engine = Engine(lambda e, b: None)
        >>> register_robust_events(engine)
        >>> engine.add_event_handler(RobustEvents.ATTACK_COMPLETED, lambda e: None)
    """

    ATTACK_STARTED = "attack_started"
    ATTACK_COMPLETED = "attack_completed"


def register_robust_events(engine: Engine) -> None:
    """Registers :class:`RobustEvents` on ``engine`` unless they already are (idempotent).

    Args:
        engine: an ignite ``Engine`` (MONAI's trainers and evaluators are ones).

    Example::

        >>> register_robust_events(trainer)
        >>> trainer.add_event_handler(RobustEvents.ATTACK_STARTED, lambda engine: print("crafting"))
    """
    if not engine.has_registered_events(RobustEvents.ATTACK_STARTED):
        engine.register_events(*RobustEvents)
