"""VSR-Transformer's spatial-temporal convolutional self-attention (STCSA).

Cao, Li, Zhang, Van Gool, "Video Super-Resolution Transformer", arXiv:2106.06847 (2021), Sec. 3.2;
the official class is ``globalAttention`` in caojiezhang/VSR-Transformer.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.crop import crop_padding
from vsrblocks.memory_format import memory_format_of, to_memory_format
from vsrblocks.shapes import check_shape

__all__ = ["STCSA"]


class STCSA(nn.Module):
    """Spatial-temporal convolutional self-attention over all patches of all frames.

    For every frame, ``q = to_q(u_t)`` and ``k = to_k(u_t)`` (3x3 depthwise convs) and ``v = to_v(u_t)``
    (3x3 full conv). Each map is cut into non-overlapping ``p x p`` patches; a token is one patch of one
    frame, a vector of ``D = C * p^2`` entries ordered (channel, row, column) with the channel slowest.
    The ``T * n`` tokens of the clip (``n`` patches per frame) attend to each other jointly in space and
    time with ``softmax(Q K^T / sqrt(d)) V``, where the heads split ``D`` into ``num_heads`` contiguous
    chunks of ``d = D / num_heads`` (a head owns ``C / num_heads`` whole channels). The patches are put
    back, passed through the 3x3 conv ``conv``, and (``residual=True``) the block input is added.

    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, so it uses a fused
    kernel where the device has one (without one, the ``(T * n)^2`` attention matrix per head and clip is
    materialised: 85 MB in float32 for 5 frames of 180x320 at ``p = 8``). The block has no positional
    information, so it is equivariant to permutations of the frames. Channels-last frames stay channels-last
    (the patches are put back in the input's memory format before ``conv``).

    **Official quirk (internal residual).** The official block returns ``conv(attention(u)) + u``; inside
    VSR-Transformer ``u`` is the layer-normalised input, and the transformer layer adds the un-normalised
    input again outside (``h = h + STCSA(LN(h))``), so the normalised features are added twice.
    ``residual=True`` (default) reproduces that; ``residual=False`` returns the attention branch alone.

    **Any size.** ``H`` and ``W`` need not be multiples of ``p``. The q/k/v convs run on the frame as
    given (zero padding of 1 at the real border, as for any size), then q, k, v are padded with zeros at
    the bottom/right to the next multiple of ``p``, and the result is cropped back before ``conv``. With
    ``mask_padding=True`` (default) the padding is masked: the padded pixels are zero in q and k, so they
    add nothing to any query-key score, and every output pixel is a weighted average over only those key
    patches in which the same pixel position is a real pixel (the attention weights are renormalised per
    pixel position), so a pixel position that lies in the padding of some patches is averaged over the
    patches where it is real, instead of over zeros. With ``mask_padding=False`` padded value pixels
    count as zeros (plain zero padding: cheaper, but pixels near the bottom/right patch row/column are
    pulled towards zero). Scores always use the scale ``d^-1/2`` of a full patch. When ``H`` and ``W`` are
    multiples of ``p`` both settings are the official computation.

    Args:
        channels: feature channels C.
        patch_size: side ``p`` of the square patches (paper: 8).
        num_heads: attention heads; must divide ``channels`` (paper: 1).
        residual: add the block input to the output (the official behaviour, see above).
        mask_padding: mask the padding added for sizes that are not multiples of ``patch_size``.

    Shape:
        - Input: ``(B, T, C, H, W)``
        - Output: ``(B, T, C, H, W)``

    Examples:
        >>> block = STCSA(channels=16, patch_size=4, num_heads=2)
        >>> block(torch.randn(2, 3, 16, 10, 13)).shape
        torch.Size([2, 3, 16, 10, 13])
    """

    def __init__(
        self,
        channels: int = 64,
        patch_size: int = 8,
        num_heads: int = 1,
        residual: bool = True,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(f"num_heads must be >= 1 and divide channels={channels}, got {num_heads}")
        self.channels = channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.residual = residual
        self.mask_padding = mask_padding
        self.head_dim = channels // num_heads * patch_size**2
        self.to_q = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.to_k = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.to_v = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.to_q, self.to_k, self.to_v, self.conv):
            conv.reset_parameters()

    def _tokens(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``(B*T, C, Hp, Wp)`` -> ``(B, heads, T*n, d)``, token order frame-major then row-major patches."""
        p = self.patch_size
        return rearrange(x, "(b t) (g c) (nh i) (nw j) -> b g (t nh nw) (c i j)", t=frames, g=self.num_heads, i=p, j=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = check_shape(x, "B T C H W", name="clip", C=self.channels)
        frames, height, width = dims["T"], dims["H"], dims["W"]
        p = self.patch_size
        pad_h, pad_w = -height % p, -width % p
        frames_flat = rearrange(x, "b t c h w -> (b t) c h w")
        q, k, v = (F.pad(conv(frames_flat), (0, pad_w, 0, pad_h)) for conv in (self.to_q, self.to_k, self.to_v))
        q, k, v = (self._tokens(z, frames) for z in (q, k, v))
        nh, nw = (height + pad_h) // p, (width + pad_w) // p
        scale = self.head_dim**-0.5
        if self.mask_padding and (torch.compiler.is_exporting() or pad_h or pad_w):  # exported: no size branch
            # Append one column per in-patch pixel position holding that pixel's validity in the key patch:
            # the attention read-out of those columns is the weight of the real keys, the normaliser.
            # a comparison, not a slice assignment: torch.export would freeze whether the padding is empty
            rows = torch.arange(height + pad_h, device=v.device) < height
            cols = torch.arange(width + pad_w, device=v.device) < width
            valid = (rows[:, None] & cols[None, :]).to(v.dtype)
            valid = rearrange(valid, "(nh i) (nw j) -> (nh nw) (i j)", i=p, j=p).repeat(frames, 1)
            v = torch.cat((v, valid.expand(*v.shape[:2], -1, -1)), dim=-1)
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
            out, weight = out.split((self.head_dim, p * p), dim=-1)
            out = rearrange(out, "b g n (c ij) -> b g n c ij", ij=p * p) / weight.clamp_min(
                torch.finfo(weight.dtype).tiny
            ).unsqueeze(-2)
            out = rearrange(out, "b g n c ij -> b g n (c ij)")
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        out = rearrange(out, "b g (t nh nw) (c i j) -> (b t) (g c) (nh i) (nw j)", t=frames, nh=nh, nw=nw, i=p, j=p)
        out = self.conv(to_memory_format(crop_padding(out, height, width), memory_format_of(frames_flat)))
        out = rearrange(out, "(b t) c h w -> b t c h w", t=frames)
        return cast(torch.Tensor, out + x if self.residual else out)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, patch_size={self.patch_size}, num_heads={self.num_heads}, "
            f"residual={self.residual}, mask_padding={self.mask_padding}"
        )
