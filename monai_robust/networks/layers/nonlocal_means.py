# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Non-local means over the positions of a feature map, the operation inside the feature-denoising block of
Xie et al. (CVPR 2019). Works on any spatial rank by flattening the positions.

Papers:
    Xie, Wu, van der Maaten, Yuille & He, "Feature Denoising for Improving Adversarial Robustness", CVPR 2019,
    https://arxiv.org/abs/1812.03411 (code: facebookresearch/ImageNet-Adversarial-Training, ``non_local_op``).
    Wang, Girshick, Gupta & He, "Non-local Neural Networks", CVPR 2018, https://arxiv.org/abs/1711.07971.
"""

from __future__ import annotations

import math

import torch

__all__ = ["non_local_means"]


def non_local_means(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, affinity: str = "gaussian") -> torch.Tensor:
    """``y_p = sum_q f(theta_p, phi_q) g_q / C(p)`` over all positions ``p, q`` of a feature map.

    Affinities (Xie et al., Sec. 4):

    * ``"gaussian"`` (softmax): ``f = exp(theta_p . phi_q / sqrt(d))``, ``C(p) = sum_q f``;
    * ``"dot"``: ``f = theta_p . phi_q``, ``C = L`` positions; computed as ``theta^T (phi g^T) / L`` when
      that is cheaper (``d <= L``), which never builds the ``L x L`` matrix;
    * ``"mean"``: ``f = 1``, ``C = L`` (every position receives the map's mean of ``g``).

    Args:
        theta: ``(N, d, *spatial)`` query embedding.
        phi: ``(N, d, *spatial)`` key embedding.
        g: ``(N, C, *spatial)`` values (the features being denoised).
        affinity: ``"gaussian"``, ``"dot"`` or ``"mean"``.

    Returns:
        ``(N, C, *spatial)``, the denoised values.

    Raises:
        ValueError: For an unknown ``affinity``.

    Example::

        >>> x = torch.randn(2, 4, 5, 5)
        >>> non_local_means(x, x, x, "gaussian").shape
        torch.Size([2, 4, 5, 5])
    """
    n, c = g.shape[0], g.shape[1]
    gv = g.flatten(2)  # (N, C, L)
    length = gv.shape[-1]
    if affinity == "mean":
        return gv.mean(dim=-1, keepdim=True).expand(n, c, length).reshape(g.shape)
    q = theta.flatten(2)  # (N, d, L)
    k = phi.flatten(2)  # (N, d, L)
    if affinity == "gaussian":
        f = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(q.shape[1]), dim=-1)  # (N, L, L), rows p
        y = torch.bmm(gv, f.transpose(1, 2))  # (N, C, L) x (N, L, L) -> (N, C, L)
    elif affinity == "dot":
        if q.shape[1] <= length:
            y = torch.bmm(torch.bmm(gv, k.transpose(1, 2)), q) / length  # (N, C, d) x (N, d, L) -> (N, C, L)
        else:
            y = torch.bmm(gv, torch.bmm(k.transpose(1, 2), q)) / length  # (N, C, L) x (N, L, L)
    else:
        raise ValueError(f"affinity must be 'gaussian', 'dot' or 'mean', got affinity='{affinity}'.")
    return y.reshape(g.shape)
