# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Batches in every form the package accepts, read one way: a tensor or ndarray ``(N, C, *spatial)``, a MONAI
dictionary ``{"image", "label"}``, an ``(image, label, ...)`` tuple, or an iterable of those (a MONAI or PyTorch
``DataLoader``).

* :func:`as_image_batch` checks one image batch and makes it floating point;
* :func:`split_batch` reads one batch as ``(images, labels or None)``; :func:`image_label` also moves it to a device;
* :func:`iter_image_batches` reads a whole source batch by batch (cutting and shuffling a tensor source);
* :func:`as_batches` collects the finite image batches of a source into a list (what detectors fit on);
* :func:`training_batch_size` keeps a ``drop_last`` training loader from running zero iterations.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor

__all__ = ["as_batches", "as_image_batch", "image_label", "iter_image_batches", "split_batch", "training_batch_size"]

logger = logging.getLogger(__name__)


def as_image_batch(images: Any, where: str = "images", finite: bool = False) -> torch.Tensor:
    """One image batch as a floating-point tensor ``(N, C, *spatial)`` (not copied when already floating point).

    Args:
        images: Tensor, MetaTensor or ndarray.
        where: how to name the batch in error messages.
        finite: also refuse NaN/Inf values.

    Returns:
        The batch, float32 when it was an integer type, on its own device.

    Raises:
        ValueError: When ``images`` is not a tensor/ndarray, has fewer than 3 dimensions, or (with ``finite``)
            holds NaN/Inf values.

    Example::

        >>> as_image_batch(np.zeros((2, 1, 4, 4), np.uint8)).dtype
        torch.float32
    """
    x = convert_to_tensor(images, track_meta=False) if images is not None else None
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: images must be a Tensor or an ndarray (N, C, *spatial), got {type(images).__name__}.")
    if x.ndim < 3:
        raise ValueError(f"{where}: images must be (N, C, *spatial) with at least one spatial dim, got shape {tuple(x.shape)}.")
    x = x if x.is_floating_point() else x.float()
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where} contains {int((~torch.isfinite(x)).sum())} NaN/Inf values.")
    return x


def split_batch(batch: Any, where: str = "batch") -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch as ``(images (N, C, *spatial) float, labels or None)``: a dict with ``"image"`` (and optionally
    ``"label"``), an ``(image, label, ...)`` tuple, or an image tensor/ndarray. Labels ``(N,)`` or ``(N, 1)`` become
    ``(N,)``; the images are not copied when already floating point.

    Raises:
        ValueError: When the images are not ``(N, C, *spatial)``, a dict has no ``"image"``, or the labels' length
            differs (``where`` names the batch in the message).

    Example::

        >>> split_batch({"image": torch.zeros(2, 1, 4, 4), "label": torch.tensor([[0], [1]])})[1]
        tensor([0, 1])
    """
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ValueError(f"{where}: a dict batch needs the key 'image', got keys {list(batch)}.")
        images, labels = batch["image"], batch.get("label")
    elif isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError(f"{where}: got an empty tuple/list batch.")
        images, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        images, labels = batch, None
    x = as_image_batch(images, where)
    y = None
    if labels is not None:
        y = convert_to_tensor(labels, track_meta=False)
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{where}: labels of shape {tuple(y.shape)} do not match images {tuple(x.shape)}.")
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):  # class indices (N,) or (N, 1) -> (N,)
            y = y.reshape(-1)
    return x, y


def image_label(batch: Any, device: torch.device | str, where: str = "batch") -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`split_batch` on ``device``: float32 images and ``long`` labels (or ``None``).

    Example::

        >>> x, y = image_label({"image": torch.zeros(2, 1, 4, 4), "label": [0, 1]}, "cpu")
    """
    x, y = split_batch(batch, where)
    return x.to(device).float(), (None if y is None else y.to(device).long())


def iter_image_batches(
    source: Any, batch_size: int = 32, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Reads a source of images as ``(images (N, C, *spatial) float, labels (N,) long or None)`` batches.

    A tensor/ndarray ``(N, C, *spatial)``, or a mapping ``{"image": (N, C, *spatial), "label": (N,)}``, is cut into
    batches of ``batch_size`` (shuffled with ``generator`` when one is given). Anything else is iterated as it is
    (a MONAI or PyTorch ``DataLoader``, a list of batches), each batch being a dict with an ``"image"`` key (and
    optionally ``"label"``), an ``(image, label, ...)`` tuple, or an image tensor.

    Args:
        source: the images, as above. Iterate it again for each pass, so pass a re-iterable (a ``DataLoader`` or
            a list), not a generator.
        batch_size: batch size when ``source`` is a tensor or a mapping (>= 1).
        generator: shuffles a tensor or mapping source; ``None`` keeps its order. Iterables keep their own order.

    Returns:
        An iterator of ``(images, labels)``; images stay on their device, labels are ``None`` when absent.

    Raises:
        ValueError: On a batch that is not an image tensor of shape ``(N, C, *spatial)``, a dict without
            ``"image"``, or labels whose length differs from the images'.

    Example::

        >>> for images, labels in iter_image_batches({"image": torch.rand(10, 1, 8, 8)}, batch_size=4):
        ...     print(images.shape[0], labels)
        4 None
        4 None
        2 None
    """
    if isinstance(source, (torch.Tensor, np.ndarray)) or (isinstance(source, Mapping) and "image" in source):
        x, y = split_batch(source, "source")
        n = x.shape[0]
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(x.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], (None if y is None else y[idx.to(y.device)])
        return
    if isinstance(source, (str, os.PathLike)) or not isinstance(source, Iterable):
        raise ValueError(
            f"source must be a tensor, a {{'image': ..}} mapping or an iterable of batches (e.g. a DataLoader), "
            f"got {type(source).__name__}."
        )
    for i, batch in enumerate(source):
        yield split_batch(batch, f"batch {i} of the source")


def as_batches(data: Any, name: str = "data", chunk: int = 256) -> list[torch.Tensor]:
    """Reads images given as a tensor/array ``(N, C, *spatial)`` or an iterable of batches into a list of finite
    float tensors. A batch may be a tensor, a MONAI dictionary (its ``"image"`` entry) or a tuple/list (its first
    entry), so a MONAI ``DataLoader`` can be passed directly; empty batches are dropped.

    Args:
        data: the images.
        name: how to call them in error messages.
        chunk: batch size used to split a single tensor.

    Returns:
        A list of ``(n_i, C, *spatial)`` float tensors (possibly empty).

    Raises:
        ValueError: When a batch is not an image batch with at least one spatial dimension, or holds NaN/Inf.

    Example::

        >>> [b.shape[0] for b in as_batches(torch.rand(5, 1, 8, 8), chunk=2)]
        [2, 2, 1]
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = as_image_batch(data, name, finite=True)
        return list(x.split(chunk)) if x.shape[0] else []
    if isinstance(data, Mapping):
        return as_batches(data["image"] if "image" in data else None, name, chunk)
    if not isinstance(data, Iterable):
        raise ValueError(f"{name} must be a tensor (N, C, *spatial) or an iterable of batches, got {type(data).__name__}.")
    batches = []
    for item in data:
        if isinstance(item, Mapping):
            if "image" not in item:
                raise ValueError(f"{name}: a dictionary batch needs an 'image' key, got keys {sorted(item)}.")
            item = item["image"]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        x = as_image_batch(item, name, finite=True)
        if x.shape[0]:
            batches.append(x)
    return batches


def training_batch_size(num_images: int, batch_size: int, world_size: int = 1, split: str = "training") -> int:
    """The batch size of a ``drop_last`` training loader: ``batch_size``, or, when one process has fewer images
    than that, all of its images in one batch (logged as a warning), so that an epoch never runs zero iterations.

    Args:
        num_images: images in the split.
        batch_size: the configured batch size (>= 1).
        world_size: processes the split is divided among (a distributed sampler pads to equal shares).
        split: the split's name, for the messages.

    Returns:
        The batch size to use.

    Raises:
        ValueError: When a process would have fewer than 2 images (BatchNorm cannot train on one), or an
            argument is not a positive integer.

    Example::

        >>> training_batch_size(16, 32)  # logs "the training split has 16 images per process, fewer than ..."
        16
    """
    for name, v in (("num_images", num_images), ("batch_size", batch_size), ("world_size", world_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "num_images" else 1):
            raise ValueError(f"{name} must be a positive integer, got {name}={v!r}.")
    per_process = math.ceil(num_images / world_size)
    if per_process < 2:
        raise ValueError(
            f"the {split} split has {num_images} image(s) for {world_size} process(es): at least 2 per process are "
            "needed to train (BatchNorm); give more images (bundles: --num_images) or a dataset with more."
        )
    if per_process >= batch_size:
        return batch_size
    logger.warning(
        "the %s split has %d images per process, fewer than batch_size=%d: training on batches of %d instead "
        "(with drop_last, a batch of %d would run zero iterations).", split, per_process, batch_size, per_process,
        batch_size,
    )
    return per_process
