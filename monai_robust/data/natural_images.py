# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Non-medical natural images, the fitting images of universal perturbations against medical classifiers (Minagi
et al., J. Imaging 2022).

:class:`NaturalImageDataset` reads a folder of PNG/JPEG photographs resized to the model's input;
:func:`sample_photo_paths` lists the photographs an installed package ships (matplotlib's ``grace_hopper.jpg``), and
:func:`photo_crops` cuts many random crops from them, so tests and tutorials have natural images offline;
:func:`procedural_textures` draws natural-image-like 1/f^alpha textures in 2D or 3D.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

PILImage, _has_pil = optional_import("PIL.Image")

__all__ = ["IMAGE_EXTENSIONS", "NaturalImageDataset", "photo_crops", "procedural_textures", "sample_photo_paths"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""File name endings :class:`NaturalImageDataset` reads (case-insensitive)."""


def _read_image(path: Path, channels: int) -> np.ndarray:
    """One file as float ``(C, H, W)`` in [0, 1] (8-bit scale), grayscale (ITU-R 601-2 luma) or RGB."""
    if not _has_pil:
        raise ModuleNotFoundError("reading natural images needs pillow: pip install pillow.")
    try:
        with PILImage.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                bg = PILImage.new("RGBA", img.size, (255, 255, 255, 255))  # transparent pixels -> white
                img = PILImage.alpha_composite(bg, img)
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image file {str(path)!r}: {e}") from e
    arr = arr / (65535.0 if arr.max() > 255 else 255.0)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def _check_size(spatial_size: Any) -> tuple[int, int]:
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in size):
        raise ValueError(f"spatial_size must be an int or (H, W) of ints >= 1, got spatial_size={spatial_size!r}.")
    return int(size[0]), int(size[1])


def _check_channels(channels: Any) -> int:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got channels={channels!r}.")
    return int(channels)


def _check_range(intensity_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in intensity_range)
    except (TypeError, ValueError) as e:
        raise ValueError(f"intensity_range must be (low, high), got intensity_range={intensity_range!r}.") from e
    if not lo < hi:
        raise ValueError(f"intensity_range must satisfy low < high, got intensity_range={intensity_range!r}.")
    return lo, hi


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, C, *size)``, area-averaged when shrinking (no aliasing), bilinear otherwise."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    shrink = all(s_in >= s_out for s_in, s_out in zip(x.shape[2:], size))
    if shrink:
        return torch.nn.functional.interpolate(x, size=tuple(size), mode="area")
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return torch.nn.functional.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class NaturalImageDataset(torch.utils.data.Dataset):
    """Non-medical photographs from a folder, resized to a 2D model's input, as ``{"image": (C, H, W)}`` items.

    The natural-image source of universal perturbations against medical classifiers (Minagi, Hirano & Takemoto,
    "Natural Images Allow Universal Adversarial Attacks on Medical Image Classification Using Deep Neural Networks
    with Transfer Learning", J. Imaging 2022, https://doi.org/10.3390/jimaging8020038). Wrap it in a MONAI
    ``DataLoader`` and fit a UAP on it. Files are read when indexed; color images become grayscale (ITU-R 601-2
    luma) for a 1-channel model, transparency is composited on white, and 8-bit values 0..255 are mapped linearly
    onto ``intensity_range``. The whole image is resized (area averaging when shrinking), keeping no aspect ratio.

    Args:
        folder: directory searched (not recursively) for files ending in :data:`IMAGE_EXTENSIONS`, sorted by name.
        spatial_size: ``(H, W)`` or one int, the model's input size in pixels.
        channels: 1 (grayscale) or 3 (RGB), the model's input channels.
        intensity_range: ``(low, high)`` onto which 8-bit ``0..255`` is mapped, in model-input units; MedMNIST-style
            models take ``(0.0, 1.0)``, the default.

    Raises:
        ValueError: When the folder does not exist or holds no PNG/JPEG file, an argument is out of range, or (on
            indexing) a file cannot be read as an image (the message names the file).

    Example::

        >>> ds = NaturalImageDataset("photos/", spatial_size=28, channels=1)
        >>> loader = monai.data.DataLoader(ds, batch_size=32)
        >>> result = SGDUAP(net, zeta=0.04, bounds=(0.0, 1.0)).fit(loader, reference=medical_images)
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        spatial_size: int | Sequence[int],
        channels: int = 1,
        intensity_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"folder {str(root)!r} does not exist or is not a directory.")
        self.files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f"folder {str(root)!r} holds no image file ending in {IMAGE_EXTENSIONS}.")
        self.spatial_size = _check_size(spatial_size)
        self.channels = _check_channels(channels)
        self.intensity_range = _check_range(intensity_range)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        x = torch.from_numpy(_read_image(path, self.channels))[None]
        x = _resize(x, self.spatial_size)[0].clamp(0.0, 1.0)
        lo, hi = self.intensity_range
        return {"image": x * (hi - lo) + lo, "filename": str(path)}


def sample_photo_paths() -> list[Path]:
    """The photographs of real scenes that installed packages ship, usable as an offline natural-image source.

    Today: matplotlib's ``sample_data/grace_hopper.jpg`` (a 512 x 600 color portrait), when matplotlib is installed.
    Clip art and logos in the same folder are left out.

    Returns:
        The paths found (possibly an empty list).

    Example::

        >>> [p.name for p in sample_photo_paths()]
        ['grace_hopper.jpg']
    """
    mpl, has_mpl = optional_import("matplotlib")
    if not has_mpl:
        return []
    path = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [path] if path.is_file() else []


def photo_crops(
    num_images: int,
    spatial_size: int | Sequence[int],
    channels: int = 1,
    *,
    photos: Sequence[str | os.PathLike] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    intensity_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Many natural images from a few photographs: random square crops (area fraction in ``scale``), random
    horizontal flips, resized to the model's input (the random-resized-crop of ImageNet training).

    Args:
        num_images: how many crops (>= 1).
        spatial_size: ``(H, W)`` or one int.
        channels: 1 (grayscale) or 3 (RGB).
        photos: image files to crop; default :func:`sample_photo_paths`.
        scale: ``(min, max)`` crop area as a fraction of the photo's largest square, in ``(0, 1]``.
        intensity_range: ``(low, high)`` onto which 8-bit ``0..255`` is mapped.
        generator: seeds the crops.

    Returns:
        ``(num_images, channels, H, W)`` float tensor in ``intensity_range``.

    Raises:
        ValueError: When there is no photo (none given and none installed), a photo cannot be read (named), or an
            argument is out of range.

    Example::

        >>> crops = photo_crops(256, 28, generator=torch.Generator().manual_seed(0))
        >>> crops.shape
        torch.Size([256, 1, 28, 28])
    """
    if not isinstance(num_images, (int, np.integer)) or isinstance(num_images, bool) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got num_images={num_images!r}.")
    size, channels = _check_size(spatial_size), _check_channels(channels)
    lo_s, hi_s = _check_range(scale)
    if not (0 < lo_s and hi_s <= 1):
        raise ValueError(f"scale must satisfy 0 < min < max <= 1, got scale={scale!r}.")
    paths = [Path(p) for p in photos] if photos is not None else sample_photo_paths()
    if not paths:
        raise ValueError("no photographs: pass photos=[...] (matplotlib's sample photo was not found).")
    imgs = [torch.from_numpy(_read_image(p, channels)) for p in paths]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    which = torch.randint(len(imgs), (num_images,), generator=gen)
    area = torch.empty(num_images).uniform_(lo_s, hi_s, generator=gen)
    pos = torch.rand(num_images, 2, generator=gen)
    flip = torch.rand(num_images, generator=gen) < 0.5
    out = torch.empty((num_images, channels) + size)
    for i in range(num_images):  # crops of different sizes from different photos: one resize each
        img = imgs[int(which[i])]
        h, w = img.shape[1:]
        side = max(1, int(round(math.sqrt(float(area[i])) * min(h, w))))
        top, left = int(pos[i, 0] * (h - side)), int(pos[i, 1] * (w - side))
        crop = img[None, :, top : top + side, left : left + side]
        crop = crop.flip(-1) if bool(flip[i]) else crop
        out[i] = _resize(crop, size)[0]
    lo, hi = _check_range(intensity_range)
    return out.clamp(0.0, 1.0) * (hi - lo) + lo


def procedural_textures(
    num_images: int,
    spatial_size: Sequence[int],
    channels: int = 1,
    *,
    alpha: float = 2.0,
    intensity_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Natural-image-like random textures in 2D or 3D: Gaussian noise whose power spectrum falls as ``1/f^alpha``
    (natural photographs have ``alpha`` close to 2; van der Schaaf & van Hateren, Vision Res 1996), each image
    min-max scaled onto ``intensity_range``.

    Args:
        num_images: how many (>= 1).
        spatial_size: ``(H, W)`` or ``(D, H, W)``.
        channels: channels per image (>= 1); channels are drawn independently.
        alpha: spectral exponent (>= 0); 0 is white noise.
        intensity_range: ``(low, high)`` of the output.
        generator: seeds the noise.

    Returns:
        ``(num_images, channels, *spatial_size)`` float tensor.

    Raises:
        ValueError: When an argument is out of range.

    Example::

        >>> procedural_textures(8, (16, 16, 16), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 1, 16, 16, 16])
    """
    if not isinstance(num_images, (int, np.integer)) or isinstance(num_images, bool) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got num_images={num_images!r}.")
    size = tuple(spatial_size)
    if len(size) not in (2, 3) or not all(isinstance(s, (int, np.integer)) and s >= 2 for s in size):
        raise ValueError(f"spatial_size must be (H, W) or (D, H, W) of ints >= 2, got spatial_size={spatial_size!r}.")
    if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be an integer >= 1, got channels={channels!r}.")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got alpha={alpha!r}.")
    lo, hi = _check_range(intensity_range)
    noise = torch.randn((num_images, channels) + size, generator=generator)
    dims = tuple(range(2, 2 + len(size)))
    freqs = torch.meshgrid(*[torch.fft.fftfreq(s) for s in size], indexing="ij")
    f = torch.sqrt(sum(g**2 for g in freqs))
    amp = f.clamp_min(1.0 / max(size)) ** (-alpha / 2.0)  # amplitude ~ f^(-alpha/2) <=> power ~ f^(-alpha)
    amp[(0,) * len(size)] = 0.0  # zero mean before scaling
    img = torch.fft.ifftn(torch.fft.fftn(noise, dim=dims) * amp, dim=dims).real
    flat = img.reshape(num_images, channels, -1)
    mn, mx = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    img = ((flat - mn) / (mx - mn).clamp_min(1e-12)).reshape_as(img)
    return img * (hi - lo) + lo
