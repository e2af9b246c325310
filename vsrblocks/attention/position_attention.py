"""DANet position attention module (PAM): global spatial self-attention with a zero-initialised gate.

Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019; official
``encoding/nn/da_att.py`` (``PAM_Module``). Parameter names (``query_conv``, ``key_conv``, ``value_conv``,
``gamma``) match the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["PositionAttention", "position_attention"]


def _fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    # The fused kernels (CPU flash, CUDA flash) only take contiguous (batch, heads, positions, width) inputs
    # with the same width for queries and values; otherwise PyTorch silently falls back to the explicit
    # N x M map (5 GB for five 120x90 frames). Zero columns change no dot product and are cut from the output.
    n, e = query.shape[-2], value.shape[-1]
    width = max(query.shape[-1], e)
    q, k, v = (
        F.pad(t, (0, width - t.shape[-1])).reshape(-1, 1, t.shape[-2], width).contiguous() for t in (query, key, value)
    )
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :e]
    return out.reshape(*query.shape[:-2], n, e)


def position_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Unscaled softmax attention ``softmax(Q K^T) V`` over all positions, DANet/SAGAN style.

    Args:
        query: ``(..., N, D)``.
        key: ``(..., M, D)``.
        value: ``(..., M, E)``.
        fused: use :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1``, which is the
            same function without materialising the ``N x M`` map: memory linear in ``N + M`` in inference
            and training (the fused kernels recompute the map blockwise in the backward pass).
            ``False`` computes the map explicitly (the reference the fused path is tested against;
            ``O(N M)`` memory).

    Returns:
        ``(..., N, E)``.

    Raises:
        ValueError: if the leading dimensions differ (no broadcasting), ``query`` and ``key`` have
            different ``D`` or ``key`` and ``value`` a different number of positions ``M``.

    Examples:
        >>> q, k, v = torch.randn(2, 6, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3)
        >>> position_attention(q, k, v).shape
        torch.Size([2, 6, 3])
        >>> torch.allclose(position_attention(q, k, v), position_attention(q, k, v, fused=False), atol=1e-6)
        True
    """
    if (
        query.dim() < 2
        or key.dim() != query.dim()
        or value.dim() != query.dim()
        or key.shape[:-2] != query.shape[:-2]
        or value.shape[:-2] != query.shape[:-2]
        or key.shape[-1] != query.shape[-1]
        or value.shape[-2] != key.shape[-2]
    ):
        raise ValueError(
            "position_attention: expected query (..., N, D), key (..., M, D) and value (..., M, E) with the same "
            f"leading dimensions, got {tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}"
        )
    if fused:
        return _fused_attention(query, key, value)
    return torch.softmax(query @ key.transpose(-2, -1), dim=-1) @ value


class PositionAttention(nn.Module):
    """DANet's position attention (PAM).

    With ``X`` of shape ``(B, C, H, W)`` and ``N = H * W``: ``Q = query_conv(X)`` and ``K = key_conv(X)`` are
    1x1 convolutions ``C -> C // reduction`` with bias, ``V = value_conv(X)`` is a 1x1 convolution ``C -> C``
    with bias. The energy ``E[i, j] = q_i . k_j`` is **not** scaled by ``1/sqrt(d)``; ``S = softmax_j(E)``;
    ``O[:, i] = sum_j S[i, j] V[:, j]``; the result is ``gamma * O + X`` with the learnable scalar ``gamma``
    initialised to 0, so a fresh module is the identity.

    The attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1``
    (identical maths; the fused CPU and GPU kernels never hold the ``N x N`` map), so memory is linear in
    ``N`` in inference and training; time stays ``O(N^2)``.

    Every operation is either a 1x1 convolution or global attention, so the module commutes with any
    permutation of the pixels (flips, rotations by 90 degrees on square inputs, transposes...).

    Args:
        channels: input (= output) channels C.
        reduction: query/key channels are ``channels // reduction`` (DANet: 8).
        fused: use the fused attention kernel (``False``: explicit ``N x N`` map, ``O(N^2)`` memory, the
            reference).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> pam = PositionAttention(channels=16)
        >>> x = torch.randn(2, 16, 5, 7)
        >>> torch.equal(pam(x), x)  # gamma starts at 0
        True
    """

    def __init__(self, channels: int, reduction: int = 8, fused: bool = True) -> None:
        super().__init__()
        if channels < reduction or channels % reduction:
            raise ValueError(f"channels must be a positive multiple of reduction={reduction}, got {channels}")
        self.channels = channels
        self.reduction = reduction
        self.fused = fused
        self.query_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.key_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.reset_parameters()
        nn.init.zeros_(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = check_shape(x, "B C H W", C=self.channels)
        q = rearrange(self.query_conv(x), "b c h w -> b (h w) c")
        k = rearrange(self.key_conv(x), "b c h w -> b (h w) c")
        v = rearrange(self.value_conv(x), "b c h w -> b (h w) c")
        out = rearrange(position_attention(q, k, v, fused=self.fused), "b (h w) c -> b c h w", h=dims["H"])
        return self.gamma * out + x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, fused={self.fused}"
