"""DASAA's self-attention alignment (SAA): PASSRnet's parallax attention generalised to 2-D, with a
morphologically cleaned validity mask.

Wang et al., "Learning Parallax Attention for Stereo Image Super-Resolution", CVPR 2019 (official
``models.py``, class ``PAM``), read as the "self-attention structure with the morphological mask" of
Chu et al., "Dual Attention with the Self-Attention Alignment for Efficient Video Super-Resolution",
Cognitive Computation 2022 (whose full text is unavailable: see the library's DASAA spec, sections 1(b)
and 1(d)). Parameter names (``rb``, ``b1``, ``b2``, ``b3``, ``fusion``) follow PASSRnet.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.attention.morphological_mask import MorphologicalMask
from vsrblocks.attention.position_attention import position_attention
from vsrblocks.reset import reset_submodules
from vsrblocks.shapes import check_shape

__all__ = [
    "MaskedSelfAttention",
    "AlignmentOutput",
    "LeakyResidualBlock",
    "received_attention",
    "local_attention",
    "attention_map",
]

MaskMode = Literal["valid_morph", "soft_morph", "none"]
AttentionScope = Literal["global", "row", "local"]
_MASK_MODES = ("valid_morph", "soft_morph", "none")
_SCOPES = ("global", "row", "local")
# Largest number of elements of one unfolded key/value band of the local scope held at a time.
_CHUNK_ELEMENTS = 2**24
# Queries per block of the received attention: a block holds QUERY_CHUNK x M logits, so memory grows linearly
# with the pixels; small blocks stay in cache (32 was the fastest of 32..388 on a 120x90 frame, CPU).
_QUERY_CHUNK = 32


class LeakyResidualBlock(nn.Module):
    """PASSRnet's ``ResB``: ``x + conv3x3(LReLU(conv3x3(x)))`` without BatchNorm.

    Args:
        channels: input (= output) channels.
        negative_slope: LeakyReLU slope (PASSRnet: 0.1).
        bias: convolution biases (PASSRnet: ``False``; DASAA's spec: ``True``).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> LeakyResidualBlock(8)(torch.randn(2, 8, 5, 6)).shape
        torch.Size([2, 8, 5, 6])
    """

    def __init__(self, channels: int, negative_slope: float = 0.1, bias: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            nn.LeakyReLU(negative_slope, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        return cast(torch.Tensor, x + self.body(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class AlignmentOutput(NamedTuple):
    """What :meth:`MaskedSelfAttention.align` returns.

    - ``output``: ``(B, C, H, W)``, the fused features (what ``forward`` returns);
    - ``warped``: ``(B, C, H, W)``, the key/value frame's values warped onto the query grid by attention;
    - ``mask``: ``(B, 1, H, W)`` validity of each query-grid pixel, or ``None`` with ``mask_mode="none"``;
    - ``forward_attention``, ``reverse_attention``: the materialised maps ``M_fwd`` (query frame over
      key/value frame) and ``M_rev`` (the reverse) in :func:`attention_map`'s layout, only with
      ``align(..., return_attention=True)``, else ``None``.
    """

    output: torch.Tensor
    warped: torch.Tensor
    mask: torch.Tensor | None
    forward_attention: torch.Tensor | None = None
    reverse_attention: torch.Tensor | None = None


def _auto_chunk(per_item: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, chunk_size)
    return max(1, _CHUNK_ELEMENTS // max(1, per_item))


def received_attention(query: torch.Tensor, key: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Column sums of ``softmax_j(Q K^T)``: the attention each key position receives from all queries.

    Computed over chunks of ``chunk_size`` queries (``None``: 32), so only a ``chunk_size x M`` block of the
    map is held: memory linear in ``M`` without autograd. Under autograd every block's softmax is kept for
    the backward pass (``N x M`` in all).

    Args:
        query: ``(..., N, D)``.
        key: ``(..., M, D)``.

    Returns:
        ``(..., M)``; the entries sum to ``N``.

    Examples:
        >>> q, k = torch.randn(2, 7, 4), torch.randn(2, 5, 4)
        >>> ref = torch.softmax(q @ k.transpose(-2, -1), dim=-1).sum(dim=-2)
        >>> torch.allclose(received_attention(q, k, chunk_size=3), ref, atol=1e-5)
        True
    """
    if (
        query.dim() < 2
        or key.dim() != query.dim()
        or key.shape[-1] != query.shape[-1]
        or key.shape[:-2] != query.shape[:-2]
    ):
        raise ValueError(
            f"received_attention: expected query (..., N, D) and key (..., M, D), got {tuple(query.shape)} "
            f"and {tuple(key.shape)}"
        )
    n = query.shape[-2]
    chunk = _QUERY_CHUNK if chunk_size is None else max(1, chunk_size)
    total = None
    # an exported graph cannot loop a size-dependent number of times: there, one chunk of every query
    for start in [0] if torch.compiler.is_exporting() else range(0, n, chunk):
        chunk = n if torch.compiler.is_exporting() else chunk
        block = torch.softmax(query[..., start : start + chunk, :] @ key.transpose(-2, -1), dim=-1).sum(dim=-2)
        total = block if total is None else total + block
    assert total is not None
    return total


def local_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    radius: int,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Unscaled softmax attention of each query pixel over the key pixels in a ``(2r+1)^2`` window.

    Pixel ``i`` attends to key pixels ``j`` with ``|y_j - y_i| <= r`` and ``|x_j - x_i| <= r`` that lie
    inside the image (outside ones get ``-inf`` logits). Keys and values are unfolded a band of rows at a
    time (``chunk_size`` rows; ``None``: bands of about 16M unfolded elements), so inference memory is
    ``O(C (2r+1)^2 W rows)`` instead of the ``O((HW)^2)`` of global attention (under autograd every band's
    unfolded keys and values are kept for the backward pass: ``O(C (2r+1)^2 HW)``). With
    ``r >= max(H, W) - 1`` it equals global attention.

    Args:
        query: ``(B, D, H, W)``.
        key: ``(B, D, H, W)``.
        value: ``(B, E, H, W)`` or ``None`` (only the received attention is wanted).
        radius: window radius r.

    Returns:
        ``(out, received)``: ``out`` ``(B, E, H, W)`` (``None`` without ``value``) and ``received``
        ``(B, 1, H, W)``, the attention each key pixel receives from all queries (column sums of the map).

    Examples:
        >>> q, k, v = torch.randn(1, 4, 5, 6), torch.randn(1, 4, 5, 6), torch.randn(1, 3, 5, 6)
        >>> out, received = local_attention(q, k, v, radius=5)
        >>> flat = lambda t: t.flatten(2).transpose(1, 2)
        >>> ref = torch.softmax(flat(q) @ flat(k).transpose(1, 2), dim=-1) @ flat(v)
        >>> torch.allclose(flat(out), ref, atol=1e-5)
        True
    """
    dims = check_shape(query, "B D H W", name="query")
    check_shape(key, "B D H W", name="key", **dims)
    if value is not None:
        check_shape(value, "B E H W", name="value", B=dims["B"], H=dims["H"], W=dims["W"])
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    b, d, h, w = query.shape
    size = 2 * radius + 1
    pad = (radius, radius, radius, radius)
    key_padded = F.pad(key, pad)
    value_padded = None if value is None else F.pad(value, pad)
    inside = F.pad(torch.ones(1, 1, h, w, device=query.device, dtype=query.dtype), pad)
    channels = d + (0 if value is None else value.shape[1])
    rows = _auto_chunk(b * channels * size * size * w, chunk_size)
    outputs, weights = [], []
    for top in [0] if torch.compiler.is_exporting() else range(0, h, rows):  # one band when exported
        bottom = h if torch.compiler.is_exporting() else min(h, top + rows)
        band = slice(top, bottom + 2 * radius)
        q = rearrange(query[:, :, top:bottom], "b d h w -> b (h w) 1 d")
        k = rearrange(F.unfold(key_padded[:, :, band], size), "b (d k) n -> b n d k", d=d)
        valid = F.unfold(inside[:, :, band], size).transpose(1, 2).unsqueeze(2) > 0
        logits = (q @ k).masked_fill(~valid, float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        weights.append(attn.squeeze(2))
        if value_padded is not None:
            v = rearrange(F.unfold(value_padded[:, :, band], size), "b (e k) n -> b n k e", e=value_padded.shape[1])
            outputs.append(rearrange(attn @ v, "b (h w) 1 e -> b e h w", w=w))
    attn_all = torch.cat(weights, dim=1)
    # fold sums the weight of query i for window offset o into key pixel i + o: the column sums.
    received = F.fold(attn_all.transpose(1, 2), (h, w), size, padding=radius)
    out = torch.cat(outputs, dim=2) if outputs else None
    return out, received


def attention_map(
    query: torch.Tensor, key: torch.Tensor, scope: AttentionScope = "global", radius: int = 7
) -> torch.Tensor:
    """The materialised unscaled attention map ``softmax_j(q_i . k_j)`` of a :class:`MaskedSelfAttention` scope.

    :class:`MaskedSelfAttention` never builds this map (fused or chunked kernels instead); it is for training
    losses on the map itself (:mod:`vsrblocks.attention.parallax_losses`) and costs ``B (HW)^2`` elements
    (``B H W^2`` for ``"row"``), so keep frames small.

    Args:
        query: ``(B, D, H, W)``, the projected queries.
        key: ``(B, D, H, W)``, the projected keys.
        scope: ``"global"`` (every key pixel), ``"row"`` (the key pixels of the query's row, PASSRnet) or
            ``"local"`` (key pixels within ``radius`` in y and x; the others get weight 0).
        radius: window radius of ``"local"``.

    Returns:
        ``(B, H, W, H, W)`` for ``"global"`` and ``"local"``: ``[b, y, x, u, v]`` is the weight of key pixel
        ``(u, v)`` for query pixel ``(y, x)``; ``(B, H, W, W)`` for ``"row"``: ``[b, y, x, v]`` is the weight
        of key pixel ``(y, v)`` for query pixel ``(y, x)`` (PASSRnet's layout). Every query's weights sum to 1.

    Examples:
        >>> q, k = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
        >>> attention_map(q, k).shape, attention_map(q, k, "row").shape
        (torch.Size([2, 3, 5, 3, 5]), torch.Size([2, 3, 5, 5]))
        >>> torch.allclose(attention_map(q, k, "local", radius=1).sum((-2, -1)), torch.ones(2, 3, 5))
        True
    """
    dims = check_shape(query, "B D H W", name="query")
    check_shape(key, "B D H W", name="key", **dims)
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if scope == "row":
        return torch.softmax(torch.einsum("bdyx,bdyv->byxv", query, key), dim=-1)
    h, w = dims["H"], dims["W"]
    logits = torch.einsum("bdyx,bduv->byxuv", query, key)
    if scope == "local":
        ys, xs = torch.arange(h, device=query.device), torch.arange(w, device=query.device)
        near_y = (ys[:, None] - ys[None, :]).abs() <= radius
        near_x = (xs[:, None] - xs[None, :]).abs() <= radius
        window = rearrange(near_y, "y u -> y 1 u 1") & rearrange(near_x, "x v -> 1 x 1 v")
        logits = logits.masked_fill(~window, float("-inf"))
    attn = torch.softmax(rearrange(logits, "b y x u v -> b y x (u v)"), dim=-1)
    return rearrange(attn, "b y x (u v) -> b y x u v", u=h)


class MaskedSelfAttention(nn.Module):
    """DASAA's self-attention alignment (SAA), after PASSRnet's parallax attention module, in 2-D.

    For a query (reference) frame ``R`` and a key/value (neighbour) frame ``A``:

    1. ``R' = rb(R)``, ``A' = rb(A)`` with one shared :class:`LeakyResidualBlock` ``rb``;
    2. 1x1 convolutions with bias, ``C -> C``: ``b1`` (queries), ``b2`` (keys), ``b3`` (values);
    3. forward attention ``M_fwd[i, j] = softmax_j(b1(R')_i . b2(A')_j)``, **no** ``1/sqrt(d)`` scaling;
    4. reverse attention ``M_rev[i, j] = softmax_j(b1(A')_i . b2(R')_j)`` (only for the mask);
    5. warp: ``W_i = sum_j M_fwd[i, j] b3(A)_j``: values from the *raw* ``A``, as in PASSRnet;
    6. mask on the query grid from the received reverse attention ``r_j = sum_i M_rev[i, j]``:

       - ``"valid_morph"`` (default, spec interpretation A): ``V = clean(1[r > threshold])`` under
         ``torch.no_grad`` (detached, as PASSRnet), ``clean`` = ``mask`` or PASSRnet's
         :meth:`MorphologicalMask.passrnet`;
       - ``"soft_morph"`` (interpretation B, differentiable): ``V = clean(min(r / threshold, 1))`` with
         ``clean`` = ``mask`` or a grey 3x3 closing, and the warped features are multiplied by ``V``;
       - ``"none"``: no mask;

    7. fusion ``fusion([W (* V), R, V])``, a 1x1 convolution ``2C + 1 -> C`` (``2C -> C`` without mask).

    ``forward(query)`` aligns a frame with itself (plain masked self-attention); ``forward(query,
    key_value)`` warps ``key_value`` onto ``query``'s grid and fuses. :meth:`align` also returns the warped
    features and the mask, and with ``return_attention=True`` also the materialised maps ``M_fwd`` and
    ``M_rev`` (:func:`attention_map`; ``O((HW)^2)`` memory, meant for training losses on small patches).

    Attention scope: ``"global"`` (all ``H W`` positions; fused SDPA kernel for the warp, column sums for
    the mask in blocks of ``chunk_size`` queries; ``O((HW)^2)`` time), ``"row"`` (PASSRnet-exact epipolar attention
    along each row; only sensible for horizontal motion) or ``"local"`` (a ``(2 r + 1)^2`` window around
    each pixel, spec interpretation C; never builds the ``HW x HW`` map).

    Memory: no scope holds an ``HW x HW`` map in inference, so memory is linear in the pixels (the fused
    kernel for the warp, ``chunk_size x HW`` blocks for the column sums, the morphology per pixel). Under
    autograd the warp stays linear (the fused kernels recompute in the backward pass) but ``"soft_morph"``
    keeps every column-sum block for its gradient, ``O((HW)^2)``; ``align(..., return_attention=True)``
    (PASSRnet's auxiliary losses in training) materialises both full maps. Train on patches.

    Args:
        channels: feature channels C of both frames and of the output.
        mask: the clean-up applied to the raw mask (default per ``mask_mode``, see step 6).
        mask_mode: ``"valid_morph"``, ``"soft_morph"`` or ``"none"``.
        attn_scope: ``"global"``, ``"row"`` or ``"local"``.
        local_radius: window radius r of the ``"local"`` scope (spec default 7).
        threshold: tau of the validity test ``r > tau`` (PASSRnet: 0.1).
        negative_slope: LeakyReLU slope of ``rb``.
        chunk_size: queries (global/row) or rows (local) per chunk; ``None``: 32 queries, or bands of
            about 16M unfolded elements (local).

    Shape:
        - query: ``(B, C, H, W)``; key_value: ``(B, C, H, W)``, ``None``, or ``(B, K, C, H, W)`` (K neighbours)
        - Output: ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K neighbours)

    Examples:
        >>> saa = MaskedSelfAttention(channels=8)
        >>> ref, nbr = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 6, 7)
        >>> saa(ref, nbr).shape
        torch.Size([2, 8, 6, 7])
        >>> out = saa.align(ref, nbr)
        >>> out.mask.shape, bool(((out.mask == 0) | (out.mask == 1)).all())
        (torch.Size([2, 1, 6, 7]), True)
        >>> MaskedSelfAttention(channels=8, attn_scope="local", local_radius=2)(ref).shape
        torch.Size([2, 8, 6, 7])
    """

    def __init__(
        self,
        channels: int = 64,
        mask: MorphologicalMask | None = None,
        mask_mode: MaskMode = "valid_morph",
        attn_scope: AttentionScope = "global",
        local_radius: int = 7,
        threshold: float = 0.1,
        negative_slope: float = 0.1,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if mask_mode not in _MASK_MODES:
            raise ValueError(f"mask_mode must be one of {_MASK_MODES}, got {mask_mode!r}")
        if attn_scope not in _SCOPES:
            raise ValueError(f"attn_scope must be one of {_SCOPES}, got {attn_scope!r}")
        if local_radius < 0:
            raise ValueError(f"local_radius must be >= 0, got {local_radius}")
        if mask is not None and mask_mode == "none":
            raise ValueError("a mask clean-up was given but mask_mode='none'")
        self.channels = channels
        self.mask_mode = mask_mode
        self.attn_scope = attn_scope
        self.local_radius = local_radius
        self.threshold = threshold
        self.chunk_size = chunk_size
        self.rb = LeakyResidualBlock(channels, negative_slope)
        self.b1 = nn.Conv2d(channels, channels, 1)
        self.b2 = nn.Conv2d(channels, channels, 1)
        self.b3 = nn.Conv2d(channels, channels, 1)
        with_mask = mask_mode != "none"
        self.fusion = nn.Conv2d(2 * channels + int(with_mask), channels, 1)
        if mask is None and mask_mode == "valid_morph":
            mask = MorphologicalMask.passrnet()
        elif mask is None and mask_mode == "soft_morph":
            mask = MorphologicalMask(3, "close", "square")
        self.mask = mask

    def reset_parameters(self) -> None:
        """Re-initialise every layer as on construction (``__init__`` does not call this: the layers initialise
        themselves, and seeded weights stay what they were)."""
        reset_submodules(self)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = q.shape[-2]
        if self.attn_scope == "local":
            out, _ = local_attention(q, k, v, self.local_radius, self.chunk_size)
            assert out is not None
            return out
        pattern = "b c h w -> b (h w) c" if self.attn_scope == "global" else "b c h w -> (b h) w c"
        back = "b (h w) c -> b c h w" if self.attn_scope == "global" else "(b h) w c -> b c h w"
        q, k, v = (rearrange(t, pattern) for t in (q, k, v))
        return rearrange(position_attention(q, k, v), back, h=h)

    def _received(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        b, _, h, w = q.shape
        if self.attn_scope == "local":
            return local_attention(q, k, None, self.local_radius, self.chunk_size)[1]
        if self.attn_scope == "global":
            flat = received_attention(
                rearrange(q, "b c h w -> b (h w) c"), rearrange(k, "b c h w -> b (h w) c"), self.chunk_size
            )
            return flat.reshape(b, 1, h, w)
        rows = received_attention(
            rearrange(q, "b c h w -> (b h) w c"), rearrange(k, "b c h w -> (b h) w c"), self.chunk_size
        )
        return rows.reshape(b, 1, h, w)

    def align(
        self, query: torch.Tensor, key_value: torch.Tensor | None = None, return_attention: bool = False
    ) -> AlignmentOutput:
        """Fused output, warped features and mask (see the class docstring).

        ``key_value`` may also be a clip ``(B, K, C, H, W)`` of K neighbours of the same query: the query's
        residual block and projections are then computed once, and every output gains the ``K`` axis
        (``(B, K, C, H, W)``, mask ``(B, K, 1, H, W)``, maps ``(B, K, ...)``).

        With ``return_attention=True`` the maps ``M_fwd`` and ``M_rev`` are also materialised, from the same
        projections, in :func:`attention_map`'s layout; ``output``, ``warped`` and ``mask`` are computed
        exactly as without them.
        """
        dims = check_shape(query, "B C H W", name="query", C=self.channels)
        several = key_value is not None and key_value.dim() == 5
        if several:
            k = check_shape(key_value, "B K C H W", name="key_value", **dims)["K"]
            key_value = rearrange(key_value, "b k c h w -> (b k) c h w")
        elif key_value is not None:
            check_shape(key_value, "B C H W", name="key_value", **dims)

        def per_neighbour(t: torch.Tensor) -> torch.Tensor:
            return rearrange(t.unsqueeze(1).expand(-1, k, -1, -1, -1), "b k c h w -> (b k) c h w") if several else t

        ref = self.rb(query)
        nbr = ref if key_value is None else self.rb(key_value)
        source = query if key_value is None else key_value
        q_ref, k_nbr = per_neighbour(self.b1(ref)), self.b2(nbr)
        warped = self._attend(q_ref, k_nbr, self.b3(source))
        target = per_neighbour(query)
        if key_value is None:
            q_nbr, k_ref = q_ref, k_nbr
        elif self.mask_mode != "none" or return_attention:
            q_nbr, k_ref = self.b1(nbr), per_neighbour(self.b2(ref))
        if self.mask_mode == "none":
            mask = None
            fused = self.fusion(torch.cat((warped, target), dim=1))
        else:
            if self.mask_mode == "valid_morph":
                with torch.no_grad():
                    valid = (self._received(q_nbr.detach(), k_ref.detach()) > self.threshold).to(query.dtype)
                    mask = self._clean(valid)
                fused_in = warped
            else:
                mask = self._clean(torch.clamp(self._received(q_nbr, k_ref) / self.threshold, max=1.0))
                fused_in = warped * mask
            fused = self.fusion(torch.cat((fused_in, target, mask), dim=1))
        maps: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if return_attention:
            maps = (
                attention_map(q_ref, k_nbr, self.attn_scope, self.local_radius),
                attention_map(q_nbr, k_ref, self.attn_scope, self.local_radius),
            )
        result = AlignmentOutput(fused, warped, mask, *maps)
        if several:  # split by K, not B: an empty batch leaves nothing to divide by
            return AlignmentOutput._make(
                None if t is None else rearrange(t, "(b k) ... -> b k ...", k=k) for t in result
            )
        return result

    def _clean(self, mask: torch.Tensor) -> torch.Tensor:
        # The clean-up is data dependent; on the meta device (shape-only tracing, FLOP counts) it is skipped.
        if self.mask is None or mask.device.type == "meta":
            return mask
        return cast(torch.Tensor, self.mask(mask))

    def forward(self, query: torch.Tensor, key_value: torch.Tensor | None = None) -> torch.Tensor:
        return self.align(query, key_value).output

    def extra_repr(self) -> str:
        scope = f", local_radius={self.local_radius}" if self.attn_scope == "local" else ""
        return (
            f"channels={self.channels}, mask_mode={self.mask_mode!r}, attn_scope={self.attn_scope!r}{scope}, "
            f"threshold={self.threshold}"
        )
