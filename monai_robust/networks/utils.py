# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Putting defense blocks into existing networks: :func:`insert_blocks` (by module name, original weights
still loadable), :func:`candidate_insertion_points`, and :func:`straight_through_mode` for evaluations that
must not credit a defense for masked gradients."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from monai.networks.utils import eval_mode
from torch import nn

__all__ = ["WithBlock", "candidate_insertion_points", "insert_blocks", "straight_through_mode"]

BlockFactory = Callable[..., nn.Module]
"""``block(spatial_dims=..., in_channels=...) -> nn.Module``, e.g. ``functools.partial(TopKSparsify, k=0.1)``."""


class WithBlock(nn.Module):
    """``block(module(x))``: an existing module followed by an inserted block, the unit :func:`insert_blocks`
    puts in place of ``module``.

    Its parameters are ``module.*`` and ``block.*``. A state dict written for the network *before* the
    insertion (keys without ``module.``) still loads, strictly: a load pre-hook maps each original key
    ``<name>.<key>`` to ``<name>.module.<key>`` and, for such an original-format checkpoint, keeps the block's
    current weights (their initialisation) for the block keys it cannot contain. A state dict of the modified
    network loads as usual. (A state dict is taken to be in the original format when it has no
    ``<name>.module.*`` key, so the original module must not have a child called ``module``.)

    Args:
        module: the original module; its output must be a tensor ``(N, C, *spatial)``.
        block: the block applied to that output.

    Example::

        >>> conv = torch.nn.Conv2d(1, 4, 3)
        >>> sd = conv.state_dict()
        >>> wrapped = WithBlock(conv, torch.nn.ReLU())
        >>> wrapped.load_state_dict(sd)  # original keys "weight", "bias"
        <All keys matched successfully>
    """

    def __init__(self, module: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.block = block
        self.register_load_state_dict_pre_hook(_load_original_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.module(x))


def _load_original_format(
    wrapper: WithBlock, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load pre-hook of :class:`WithBlock`: renames ``prefix + key`` to ``prefix + "module." + key``."""
    inner = prefix + "module."
    keys = [k for k in state_dict if k.startswith(prefix)]
    if any(k.startswith(inner) for k in keys):
        return  # already in the modified network's format
    if wrapper.module.state_dict():
        if not keys:
            return  # a partial state dict without this module: nothing to map
        for key in keys:
            state_dict[inner + key[len(prefix):]] = state_dict.pop(key)  # nested wrappers then rename further
    elif keys:
        return  # a stateless module (an activation, a pooling): keys here can only be the block's
    for key, value in wrapper.block.state_dict().items():  # an original checkpoint cannot hold the block
        state_dict.setdefault(prefix + "block." + key, value)


def _get_module(network: nn.Module, name: str) -> nn.Module:
    if not isinstance(name, str) or not name:
        raise ValueError(f"module names must be non-empty strings (dotted paths), got {name!r}.")
    try:
        return network.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in network.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {close}?" if close else " See candidate_insertion_points(network, example_input)."
        raise ValueError(f"unknown module name {name!r} in {type(network).__name__}.{hint}") from e


def _trace(network: nn.Module, example_input: torch.Tensor, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One forward pass in eval mode without gradients; per named module: call order, calls, last output."""
    records: dict[str, dict[str, Any]] = {}
    handles = []
    order = [0]

    def pre_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            rec = records.setdefault(name, {"calls": 0, "order": order[0], "output": None})
            rec["calls"] += 1
            order[0] += 1

        return hook

    def post_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            records[name]["output"] = output

        return hook

    for name in names:
        module = network.get_submodule(name)
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))
    try:
        with eval_mode(network):  # no BatchNorm statistics are updated by the dry pass
            network(example_input)
    finally:
        for h in handles:
            h.remove()
    return records


def candidate_insertion_points(network: nn.Module, example_input: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Module names after which a block can be inserted, with the shape of their output.

    A module qualifies when one forward pass of ``example_input`` calls it exactly once and it returns one
    tensor of the same rank as the input, ``(N, C, *spatial)`` (feature maps, not logits). Modules called
    several times (a shared activation, for instance) do not qualify: insert after their parent instead.

    Args:
        network: any ``nn.Module`` (a MONAI ``DenseNet121``, ``ResNet``, ``EfficientNetBN``, ...).
        example_input: a batch ``(N, C, *spatial)`` the network accepts (one sample is enough).

    Returns:
        ``[(name, output_shape), ...]`` in the order the modules are entered during the forward pass.

    Example::

        >>> from monai.networks.nets import DenseNet121
        >>> net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        >>> dict(candidate_insertion_points(net, torch.zeros(1, 1, 64, 64)))["features.denseblock2"]
        (1, 512, 8, 8)
    """
    names = [n for n, _ in network.named_modules() if n]
    records = _trace(network, example_input, names)
    rank = example_input.dim()
    out = []
    for name, rec in sorted(records.items(), key=lambda item: item[1]["order"]):
        y = rec["output"]
        if rec["calls"] == 1 and isinstance(y, torch.Tensor) and y.dim() == rank:
            out.append((name, tuple(y.shape)))
    return out


def _static_channels(module: nn.Module, name: str, spatial_dims: int | None) -> tuple[int, int]:
    channels = getattr(module, "out_channels", None)
    if not isinstance(channels, int):
        channels = getattr(module, "num_features", None)
    dims = spatial_dims
    if dims is None and isinstance(getattr(module, "kernel_size", None), tuple):
        dims = len(module.kernel_size)
    if not isinstance(channels, int) or dims is None:
        raise ValueError(
            f"cannot tell the output channels and spatial dims of module {name!r} ({type(module).__name__}) "
            "from its attributes: pass example_input (and spatial_dims where the module is not a convolution)."
        )
    return int(dims), channels


def insert_blocks(
    network: nn.Module,
    after: str | Sequence[str],
    block: BlockFactory,
    *,
    example_input: torch.Tensor | None = None,
    spatial_dims: int | None = None,
) -> nn.Module:
    """Inserts a block after each named module of an existing network, in place.

    Each module ``name`` is replaced by :class:`WithBlock` ``(module, block(spatial_dims=d, in_channels=c))``,
    where ``c`` and ``d`` are the channels and spatial dims of the module's output: measured by a forward pass
    of ``example_input`` (in eval mode, without gradients, hooks removed afterwards), or read from the module's
    ``out_channels`` / ``num_features`` (and ``kernel_size`` or ``spatial_dims``) when no example is given.
    A state dict of the original network still loads strictly into the modified one (see
    :class:`WithBlock`); a modified network stores ``<name>.module.*`` and ``<name>.block.*``.

    Args:
        network: the network to modify (MONAI ``DenseNet121``, ``ResNet``, ``EfficientNetBN``, ``SEResNet50``,
            or any ``nn.Module``), 2D or 3D.
        after: dotted module names, as in ``network.named_modules()`` (see :func:`candidate_insertion_points`).
        block: a factory called as ``block(spatial_dims=d, in_channels=c)``, e.g.
            ``functools.partial(TopKSparsify, k=0.1)``; it must return an ``nn.Module`` preserving the shape.
        example_input: a batch ``(N, C, *spatial)`` the network accepts; recommended (it checks that each module
            is called once, returns a feature map, and that each new block accepts that map).
        spatial_dims: spatial dims for the static inference without ``example_input``.

    Returns:
        ``network`` itself, modified.

    Raises:
        ValueError: For an unknown or repeated module name (the message names it and suggests close names), a
            module that the forward pass calls zero or several times or that does not return ``(N, C, *spatial)``,
            a factory that does not return an ``nn.Module``, or a block whose ``in_channels`` or output shape does
            not match the module's output.

    Example::

        >>> from functools import partial
        >>> from monai.networks.nets import DenseNet121
        >>> from monai_robust.networks.blocks.sparse_denoise import TopKSparsify
        >>> net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        >>> sd = net.state_dict()
        >>> net = insert_blocks(net, ["features.denseblock2"], partial(TopKSparsify, k=0.2),
        ...                     example_input=torch.zeros(1, 1, 64, 64))
        >>> net.load_state_dict(sd)
        <All keys matched successfully>
    """
    names = [after] if isinstance(after, str) else list(after)
    if not names:
        raise ValueError("after must name at least one module, got an empty sequence.")
    if not callable(block):
        raise ValueError(f"block must be a factory block(spatial_dims=..., in_channels=...), got {block!r}.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"module names given more than once in after: {dupes}.")
    modules = {name: _get_module(network, name) for name in names}
    records = _trace(network, example_input, names) if example_input is not None else {}
    plans: dict[str, tuple[int, int, torch.Tensor | None]] = {}
    for name in names:
        if example_input is None:
            plans[name] = (*_static_channels(modules[name], name, spatial_dims), None)
            continue
        rec = records.get(name, {"calls": 0})
        if rec["calls"] != 1:
            raise ValueError(
                f"module {name!r} is called {rec['calls']} times in one forward pass; a block can only follow a "
                "module called exactly once (insert it after the parent module instead)."
            )
        y = rec["output"]
        if not isinstance(y, torch.Tensor) or y.dim() < 3:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"module {name!r} must return a feature map (N, C, *spatial) to take a block, got {got}.")
        plans[name] = (y.dim() - 2, int(y.shape[1]), y)
    new_blocks = {}
    for name, (dims, channels, y) in plans.items():
        new = block(spatial_dims=dims, in_channels=channels)
        if not isinstance(new, nn.Module):
            raise ValueError(f"block factory must return an nn.Module, got {type(new).__name__} for module {name!r}.")
        own = getattr(new, "in_channels", None)
        if isinstance(own, int) and own != channels:
            raise ValueError(
                f"block {type(new).__name__} has in_channels={own} but module {name!r} outputs {channels} channels."
            )
        if y is not None:
            _check_block_on(new, y, name)
        new_blocks[name] = new
    for name in sorted(names, key=lambda n: -n.count(".")):  # deepest first, so parent paths stay valid
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, WithBlock(network.get_submodule(name), new_blocks[name]))
    return network


def _check_block_on(block: nn.Module, y: torch.Tensor, name: str) -> None:
    try:
        with eval_mode(block):
            out = block(y)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"block {type(block).__name__} does not accept the output of module {name!r} of shape {tuple(y.shape)}: {e}"
        ) from e
    if not isinstance(out, torch.Tensor) or out.shape != y.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"block {type(block).__name__} after module {name!r} must keep the shape {tuple(y.shape)}, got {got}."
        )


@contextlib.contextmanager
def straight_through_mode(network: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Switches the ``straight_through`` flag of every block in ``network`` (for evaluation), then restores it.

    With ``enabled=True`` the sparsifying steps pass the identity gradient (BPDA, Athalye et al., ICML 2018,
    https://arxiv.org/abs/1802.00420); forward values do not change. An attack that is much stronger in this
    mode has found gradient masking, not robustness.

    Args:
        network: a network holding blocks with a boolean ``straight_through`` attribute.
        enabled: the value to set inside the context.

    Example::

        >>> with straight_through_mode(net):
        ...     adv = PGD(net, eps=1 / 255, bounds=(0.0, 1.0))(images, labels)
    """
    saved = [(m, m.straight_through) for m in network.modules() if isinstance(getattr(m, "straight_through", None), bool)]
    try:
        for m, _ in saved:
            m.straight_through = bool(enabled)
        yield network
    finally:
        for m, flag in saved:
            m.straight_through = flag
