"""DANet channel attention module (CAM): a C x C self-attention between feature maps.

Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019; official
``encoding/nn/da_att.py`` (``CAM_Module``). The parameter name ``gamma`` matches the official checkpoints.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["ChannelSelfAttention", "channel_self_attention"]


def channel_self_attention(x: torch.Tensor) -> torch.Tensor:
    """The un-gated CAM output ``softmax(rowmax(E) - E) X`` with ``E = X X^T`` over flattened positions.

    ``rowmax(E) - E`` is DANet's "max minus energy" form. Softmax is invariant to a per-row shift, so
    this equals ``softmax(-E)``: each channel aggregates the channels **least** similar to it (it is not
    the usual ``E - max`` stabilisation; DANet issue #48 reports that ``softmax(E)`` trained worse).

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``.

    Examples:
        >>> x = torch.randn(2, 4, 3, 5)
        >>> e = torch.einsum("bchw,bdhw->bcd", x, x)
        >>> ref = torch.einsum("bcd,bdhw->bchw", torch.softmax(-e, dim=-1), x)
        >>> torch.allclose(channel_self_attention(x), ref, atol=1e-5)
        True
    """
    dims = check_shape(x, "B C H W")
    flat = rearrange(x, "b c h w -> b c (h w)")
    energy = flat @ flat.transpose(1, 2)
    energy = energy.amax(dim=-1, keepdim=True) - energy
    out = torch.softmax(energy, dim=-1) @ flat
    return rearrange(out, "b c (h w) -> b c h w", h=dims["H"])


class ChannelSelfAttention(nn.Module):
    """DANet's channel attention (CAM): ``gamma * softmax(rowmax(E) - E) X + X`` with ``E = X X^T``.

    ``X`` is the input reshaped to ``(B, C, N)``, ``N = H * W``; the affinity is ``C x C``, so cost is
    ``O(C^2 N)`` and memory ``O(C^2)``. There are no convolutions; the only parameter is the scalar gate
    ``gamma``, initialised to 0 (a fresh module is the identity). See :func:`channel_self_attention` for
    why the "max minus energy" form equals ``softmax(-E)``.

    The energies are unscaled: for large ``N`` and large activations the softmax is nearly one-hot
    (as in DANet).

    The module commutes with any permutation of the pixels, since ``E`` sums over all positions.

    Args:
        channels: input (= output) channels C.

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> cam = ChannelSelfAttention(channels=8)
        >>> x = torch.randn(2, 8, 6, 5)
        >>> torch.equal(cam(x), x)  # gamma starts at 0
        True
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        return self.gamma * channel_self_attention(x) + x

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
