"""MANA's cross-frame non-local attention with a Gaussian spatial prior, at any size.

Yu, Liu, Bo, Mei, "Memory-Augmented Non-Local Attention for Video Super-Resolution", CVPR 2022
(MANA); the official block is ``nonlocal_attention`` in jiy173/MANA ``models.py``.

The official code stores the ``(HW x HW)`` squared-distance matrix ``D`` as a parameter built for one
frame size and materialises a full ``(HW x HW)`` attention matrix per frame, so it runs at a single size
and needs ``T * (HW)^2`` floats (1.4 GB at 64x112 LR, 93 GB at 180x320). Here the Gaussian is rebuilt
from pixel coordinates on the fly and the queries are processed in chunks, so any ``H x W`` runs with a
working set bounded by one chunk, in the forward *and* (by recomputing each chunk) in the backward pass.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from vsrblocks.kernel_choice import measured_choice
from vsrblocks.shapes import check_shape

__all__ = ["GaussianCrossFrameAttention", "gaussian_cross_frame_attention", "default_chunk_size", "fused_chunk_size"]

#: Bytes the per-chunk tensors of :func:`gaussian_cross_frame_attention` may take when ``chunk_size`` is
#: ``None``: logits, probabilities and weighted probabilities of one chunk of queries against every key
#: of every frame, plus the chunk's Gaussian.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def default_chunk_size(
    batch: int, frames: int, num_pixels: int, element_size: int = 4, budget_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
    """Number of query pixels per chunk so that one chunk's working set stays within ``budget_bytes``.

    One query row is budgeted at ``3 * batch * frames * num_pixels`` elements of the compute dtype (logits,
    exponentials and their Gaussian-weighted copy under autograd; without autograd they share one buffer)
    plus ``2 * num_pixels`` float32 (the Gaussian and a temporary).

    Examples:
        >>> default_chunk_size(1, 7, 64 * 112)   # 64x112 LR, 7 frames, float32: 101 query pixels (~64 MiB)
        101
        >>> default_chunk_size(1, 7, 12 * 16)    # small frames: one chunk
        192
    """
    per_row = 3 * batch * frames * num_pixels * element_size + 2 * num_pixels * 4
    return int(max(1, min(num_pixels, budget_bytes // max(per_row, 1))))


#: Bytes of the ``log G`` bias of one query chunk of the fused path when ``chunk_size`` is ``None``.
DEFAULT_BIAS_BYTES = 16 * 2**20


def fused_chunk_size(num_pixels: int, element_size: int = 4, budget_bytes: int = DEFAULT_BIAS_BYTES) -> int:
    """Query pixels per call of the fused path: its only ``(queries x keys)`` tensor is the chunk's bias.

    Examples:
        >>> fused_chunk_size(64 * 112)   # 64x112 LR, float32: 585 queries x 7168 keys = 16 MiB
        585
    """
    return int(max(1, min(num_pixels, budget_bytes // max(num_pixels * element_size, 1))))


def _gaussian_block(
    start: int, stop: int, row0: int, row1: int, width: int, sigma: torch.Tensor, radius2: float | None
) -> torch.Tensor:
    """``G[p, q] = exp(-0.5 * d2(p, q) / sigma^2)`` for query positions ``start..stop-1`` (flat, row-major)
    against the keys of image rows ``row0..row1-1``; zero where ``d2 > radius2`` when ``radius2`` is set.

    Built from coordinates, separably (``exp(-dy^2 / 2s^2) * exp(-dx^2 / 2s^2)``: ``(H + W)`` exponentials
    per query instead of ``H * W``), in float32 (float64 for a float64 ``sigma``):
    ``(stop - start, (row1 - row0) * width)``.
    """
    device = sigma.device
    dtype = torch.promote_types(sigma.dtype, torch.float32)
    idx = torch.arange(start, stop, device=device)
    yq = torch.div(idx, width, rounding_mode="floor").to(dtype)
    xq = (idx % width).to(dtype)
    ys = torch.arange(row0, row1, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    dy2 = (yq[:, None] - ys[None, :]) ** 2  # (n, rows)
    dx2 = (xq[:, None] - xs[None, :]) ** 2  # (n, W)
    scale = -0.5 / sigma.to(dtype) ** 2
    gauss = torch.exp(dy2 * scale)[:, :, None] * torch.exp(dx2 * scale)[:, None, :]
    if radius2 is not None:
        gauss = gauss.masked_fill(dy2[:, :, None] + dx2[:, None, :] > radius2, 0.0)
    return gauss.reshape(stop - start, (row1 - row0) * width)


def _attend_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    start: int,
    stop: int,
    height: int,
    width: int,
    radius: float | None,
) -> torch.Tensor:
    """Read-outs of query positions ``start..stop-1``.

    ``q`` ``(B, n, Cq)``, ``k`` ``(B, T, Cq, N)``, ``v`` ``(B, T, N, Cv)`` -> ``(B, T, n, Cv)``.

    ``softmax(s) * G @ v`` is evaluated as ``(exp(s - max) * G) @ v / sum(exp(s - max))``: the same numbers
    (up to rounding), but the division touches ``n * Cv`` instead of ``n * N`` elements, and without autograd
    the exponentials and the Gaussian product are done in place in the logits buffer. In 16-bit dtypes the
    probabilities are normalised before the product instead, so that the product stays bounded by
    ``max |v|`` (an un-normalised sum over a wide Gaussian could exceed the fp16 range).
    """
    track = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sigma))
    logits = torch.matmul(q.unsqueeze(1), k)  # (B, T, n, N): no 1/sqrt(d) scale (official)
    shift = logits.amax(dim=-1, keepdim=True).detach()  # the result does not depend on the shift
    expo = torch.exp(logits - shift) if track else logits.sub_(shift).exp_()
    # softmax denominator over every key of each frame separately -- also in the windowed mode
    # summed in float32 for 16-bit dtypes: in fp16 a sum of more than 65504 near-1 terms would overflow
    denom = expo.sum(dim=-1, keepdim=True, dtype=torch.promote_types(expo.dtype, torch.float32))
    row0, row1, radius2 = _band(start, stop, height, width, radius)
    if radius is not None:  # numerator: only the band of image rows within `radius` of the chunk's queries
        expo = expo[..., row0 * width : row1 * width]
        v = v[:, :, row0 * width : row1 * width]
    gauss = _gaussian_block(start, stop, row0, row1, width, sigma, radius2).to(expo.dtype)
    if expo.element_size() < 4:
        inverse = denom.reciprocal().to(expo.dtype)  # the sum itself may not fit in fp16
        expo = expo * inverse if track else expo.mul_(inverse)
    weighted = expo * gauss if track else expo.mul_(gauss)  # Gaussian after the softmax, not renormalised
    if expo.element_size() < 4:
        return torch.matmul(weighted, v)
    return (torch.matmul(weighted, v) / denom).to(v.dtype)


def _fused_supported(query: torch.Tensor) -> bool:
    """Whether the fused path can run: PyTorch's CPU flash-attention kernel (it returns the log-sum-exp the
    formula needs) in float32/float64, outside ``torch.compile`` (which traces the plain chunked path)."""
    return (
        query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.float64)
        and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
        and not torch.compiler.is_compiling()
    )


#: ``log G`` below which the fused path drops a key (``G < 1e-30``).
_LOG_NEGLIGIBLE = math.log(1e-30)


def _log_gaussian_block(
    start: int,
    stop: int,
    row0: int,
    row1: int,
    width: int,
    sigma: torch.Tensor,
    radius2: float | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``log G = -d2 / (2 sigma^2)`` for queries ``start..stop-1`` against the keys of image rows ``row0..row1-1``,
    ``-inf`` where ``d2 > radius2``: the additive bias of the fused kernel, ``(stop - start, (row1 - row0) * width)``."""
    idx = torch.arange(start, stop, device=sigma.device)
    yq = torch.div(idx, width, rounding_mode="floor").to(dtype)
    xq = (idx % width).to(dtype)
    dy2 = (yq[:, None] - torch.arange(row0, row1, device=sigma.device, dtype=dtype)[None, :]) ** 2
    dx2 = (xq[:, None] - torch.arange(width, device=sigma.device, dtype=dtype)[None, :]) ** 2
    d2 = dy2[:, :, None] + dx2[:, None, :]
    bias = d2 * (-0.5 / sigma.detach().to(dtype) ** 2)
    # Weights G < 1e-30 count as zero (an absolute change below 1e-30 * max|v|): near float32's subnormal
    # range, their products make the flash kernel's backward several times slower (4x measured at 64x112).
    bias = bias.masked_fill(bias < _LOG_NEGLIGIBLE, float("-inf"))
    if radius2 is not None:
        bias = bias.masked_fill(d2 > radius2, float("-inf"))
    return bias.reshape(stop - start, (row1 - row0) * width)


def _band(start: int, stop: int, height: int, width: int, radius: float | None) -> tuple[int, int, float | None]:
    """Image rows ``row0..row1-1`` whose keys can lie within ``radius`` of queries ``start..stop-1``, and the
    squared radius (all rows and ``None`` without a window)."""
    if radius is None:
        return 0, height, None
    reach = int(math.floor(radius))
    return max(0, start // width - reach), min(height, (stop - 1) // width + reach + 1), radius * radius


def _padded_tokens(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, width_all: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, keys and values as the flash kernel takes them: ``(B, T, N, width_all)`` each, zero-padded
    channels (zeros change no dot product), the query repeated for every frame."""
    b, t, cq, n = k.shape
    qt = F.pad(q, (0, width_all - q.shape[-1])).unsqueeze(1).expand(b, t, n, width_all).contiguous()
    kt = F.pad(k.transpose(2, 3), (0, width_all - cq)).contiguous()
    vt = F.pad(v, (0, width_all - v.shape[-1])).contiguous()
    return qt, kt, vt


def _fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    height: int,
    width: int,
    radius: float | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact read-outs through two fused attention passes, without autograd: ``(B, T, N, Cv)``, and the
    log-sum-exps ``L0`` and ``L1`` (``(B, T, N)`` each) that :func:`_fused_backward` needs.

    With ``L0 = logsumexp_j(s_ij)`` and ``L1 = logsumexp_j(s_ij + log G_ij)`` (``s = q . k``, no scale),
    ``sum_j softmax(s)_ij G_ij v_j = exp(L1 - L0) * softmax(s + log G)_i @ v``. PyTorch's CPU flash kernel returns
    both the softmax read-out and its log-sum-exp, tile by tile, so no ``(queries x keys)`` logits buffer is
    written: one pass without bias gives ``L0``, one pass per query chunk with the ``log G`` bias gives the
    read-out and ``L1``. In the windowed mode the biased pass only visits the band of image rows within the
    radius (bias ``-inf`` beyond it), as the chunked path does. The kernel needs equal query/key/value widths,
    so the query, keys and values are padded with zero channels to a common width.
    """
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    n, cv = v.shape[-2], v.shape[-1]
    qt, kt, vt = _padded_tokens(q, k, v, max(k.shape[2], cv))
    _, lse0 = flash(qt, kt, vt, scale=1.0)  # (B, T, N): the softmax denominator over every key
    reads, lse1s = [], []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        row0, row1, radius2 = _band(start, stop, height, width, radius)
        bias = _log_gaussian_block(start, stop, row0, row1, width, sigma, radius2, q.dtype)
        band = slice(row0 * width, row1 * width)
        read, lse1 = flash(qt[:, :, start:stop], kt[:, :, band], vt[:, :, band], attn_mask=bias, scale=1.0)
        reads.append(read[..., :cv] * torch.exp(lse1 - lse0[:, :, start:stop]).unsqueeze(-1))
        lse1s.append(lse1)
    return torch.cat(reads, dim=2), lse0, torch.cat(lse1s, dim=2)


#: Extra key channels of the backward's biased pass: ``|p|^2, y, x, 1`` of each key position ``p``.
_POSITION_CHANNELS = 4


def _fused_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    out: torch.Tensor,
    lse0: torch.Tensor,
    lse1: torch.Tensor,
    height: int,
    width: int,
    radius: float | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact gradients of :func:`_fused_attention` for ``q``, ``k``, ``v`` and ``sigma`` through PyTorch's CPU
    flash-attention backward kernel, without recomputing the forward and without a ``(queries x keys)`` buffer.

    With ``P = softmax(s)``, ``W = P * G`` (so ``o = W v``), output gradient ``g`` and ``D_i = g_i . o_i``, the
    logit gradient is ``ds = W * (g v^T) - P * D``. The kernel computes ``A * (dO V^T - rowsum(dO * O))`` for a
    softmax ``A`` given by its log-sum-exp, so two calls give both terms exactly:

    - ``W * (g v^T)``: ``A = softmax(s + log G)`` (``L1``), ``dO = exp(L1 - L0) g`` (since
      ``exp(L1 - L0) A = W``) and ``O = 0``; this call also returns ``dv = W^T g``;
    - ``-P * D``: ``A = P`` (``L0``), ``dO = g``, ``O = o`` and zero values.

    ``ds`` is also the gradient of ``log G = -d^2 / (2 sigma^2)``, so ``dsigma = sum_ij ds_ij d_ij^2 / sigma^3``
    (only the first term depends on ``G``). The kernel does not return bias gradients, but it returns
    ``dq_i = sum_j ds_ij k_j``: keys extended by the channels ``|p_j|^2, p_j, 1`` (zero in the query, so no
    score changes) make it return ``sum_j ds_ij |p_j|^2``, ``sum_j ds_ij p_j`` and ``sum_j ds_ij``, and
    ``sum_j ds_ij |p_i - p_j|^2`` follows. Positions are taken relative to each query chunk's centre to keep
    that expansion's cancellation small in float32.
    """
    flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    b, t, cq, n = k.shape
    cv = v.shape[-1]
    # The backward is linear in `grad`: scaled by a power of two (exact) to a maximum near 1. Training gradients
    # are tiny (1e-7 and below), and their products with small weights would be subnormal numbers, which made
    # the kernel 2x slower in MANA's training step.
    exponent = torch.frexp(grad.abs().amax()).exponent if grad.numel() else torch.zeros((), dtype=torch.int32)
    grad = torch.ldexp(grad, -exponent)
    width_all = max(cq, cv)
    # -P * D over every key: L0's softmax, one call for all queries (no bias, so no chunking needed)
    qt, kt, _ = _padded_tokens(q, k, v, width_all)
    gt = F.pad(grad, (0, width_all - cv)).contiguous()
    dq0, dk0, _ = flash_backward(
        gt, qt, kt, torch.zeros_like(kt), F.pad(out, (0, width_all - cv)).contiguous(), lse0, 0.0, False, scale=1.0
    )
    # W * (g v^T) per query chunk over its band, with the keys' positions appended when sigma needs a gradient
    extended = width_all + (_POSITION_CHANNELS if sigma.requires_grad else 0)
    qt, kt, vt = _padded_tokens(q, k, v, extended)
    gt = (F.pad(grad, (0, extended - cv)) * torch.exp(lse1 - lse0).unsqueeze(-1)).contiguous()
    dq1, dk1, dv1 = torch.zeros_like(qt), torch.zeros_like(kt), torch.zeros_like(vt)
    dsigma = torch.zeros((), dtype=torch.float64, device=q.device)
    ys = torch.div(torch.arange(n, device=q.device), width, rounding_mode="floor").to(q.dtype)
    xs = (torch.arange(n, device=q.device) % width).to(q.dtype)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = slice(start, stop)
        row0, row1, radius2 = _band(start, stop, height, width, radius)
        band = slice(row0 * width, row1 * width)
        bias = _log_gaussian_block(start, stop, row0, row1, width, sigma, radius2, q.dtype)
        keys = kt[:, :, band]
        if sigma.requires_grad:
            centre_y, centre_x = (start // width + (stop - 1) // width) / 2, (width - 1) / 2
            key_y, key_x = ys[band] - centre_y, xs[band] - centre_x
            keys = keys.clone()
            keys[..., width_all:] = torch.stack(
                (key_y * key_y + key_x * key_x, key_y, key_x, torch.ones_like(key_x)), -1
            )
        dq_rows, dk_band, dv_band = flash_backward(
            gt[:, :, rows],
            qt[:, :, rows],
            keys,
            vt[:, :, band],
            torch.zeros_like(gt[:, :, rows]),
            lse1[:, :, rows],
            0.0,
            False,
            attn_mask=bias,
            scale=1.0,
        )
        dq1[:, :, rows] = dq_rows
        dk1[:, :, band] += dk_band
        dv1[:, :, band] += dv_band
        if sigma.requires_grad:
            query_y, query_x = ys[rows] - centre_y, xs[rows] - centre_x
            moments = dq_rows[..., width_all:]  # sum_j ds_ij (|p_j|^2, y_j, x_j, 1)
            d2_weighted = (
                moments[..., 0]
                - 2 * (query_y * moments[..., 1] + query_x * moments[..., 2])
                + (query_y * query_y + query_x * query_x) * moments[..., 3]
            )
            dsigma += d2_weighted.sum(dtype=torch.float64)
    grad_q = torch.ldexp((dq0[..., :cq] + dq1[..., :cq]).sum(1), exponent)
    grad_k = torch.ldexp((dk0[..., :cq] + dk1[..., :cq]).transpose(2, 3), exponent)
    grad_v = torch.ldexp(dv1[..., :cv], exponent)
    grad_sigma = torch.ldexp(dsigma / sigma.detach().to(torch.float64) ** 3, exponent)
    return grad_q, grad_k, grad_v, grad_sigma.to(sigma.dtype).reshape(sigma.shape)


class _FusedAttention(torch.autograd.Function):
    """Fused forward (:func:`_fused_attention`) and fused exact backward (:func:`_fused_backward`): gradients,
    ``sigma``'s included, equal those of the chunked implementation up to rounding, and both passes keep only
    tensors linear in the number of pixels (plus one query chunk's bias)."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        sigma: torch.Tensor,
        height: int,
        width: int,
        radius: float | None,
        chunk_size: int,
    ) -> torch.Tensor:
        out, lse0, lse1 = _fused_attention(q, k, v, sigma, height, width, radius, chunk_size)
        ctx.save_for_backward(q, k, v, sigma, out, lse0, lse1)
        ctx.geometry = (height, width, radius, chunk_size)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        q, k, v, sigma, out, lse0, lse1 = ctx.saved_tensors
        sigma = sigma.detach().requires_grad_(ctx.needs_input_grad[3])
        grads = _fused_backward(grad.contiguous(), q, k, v, sigma, out, lse0, lse1, *ctx.geometry)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None, None, None)


def gaussian_cross_frame_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    sigma: torch.Tensor | float,
    *,
    chunk_size: int | None = None,
    window_radius: float | None = None,
    window_sigmas: float | None = None,
    checkpoint: bool = True,
) -> torch.Tensor:
    """MANA's Gaussian-weighted cross-frame attention of one query frame over every frame of a clip.

    For every frame ``t`` and query pixel ``p`` (flat index ``p = y * W + x``)::

        A_t[p, q] = softmax_q(<query[p], keys_t[q]>) * exp(-((x_p - x_q)^2 + (y_p - y_q)^2) / (2 sigma^2))
        read_t[p] = sum_q A_t[p, q] * values_t[q]

    exactly as the official ``nonlocal_attention``: the softmax runs over the ``H*W`` keys of one frame
    (not jointly over frames) with **no** ``1/sqrt(d)`` scale, the Gaussian multiplies the probabilities
    **after** the softmax and the rows are **not** renormalised (they sum to less than 1). The ``T``
    read-outs are concatenated on channels, frame 0 first (channel ``t * Cv + c``).

    **Memory.** Queries are processed ``chunk_size`` pixels at a time; only one chunk's
    ``(B, T, chunk, H*W)`` logits exist at once and the Gaussian is computed from coordinates per chunk,
    so no ``(H*W x H*W)`` tensor is ever built beyond one chunk. ``chunk_size=None`` picks
    :func:`default_chunk_size` (at most 64 MiB per chunk). Results do not depend on the chunk size (each
    query row is computed independently; only the floating-point blocking of the matrix products may
    change, at the float32 rounding level: relative ~1e-6). In float32/float64 on CPU the forward runs
    fused (:func:`_fused_attention`, no logits buffer at all) -- without autograd only where that is faster on
    this CPU for this shape, timed once per shape (:func:`vsrblocks.kernel_choice.measured_choice`; the two
    paths agree to float32 rounding, and :func:`vsrblocks.kernel_choice.kernel_benchmark` ``(False)`` keeps
    the fused path) --, and with autograd on and ``checkpoint=True``
    so does the backward (:func:`_fused_backward`: the flash kernel's backward, exact gradients, ``sigma``'s
    included, from the saved output and log-sum-exps, no recomputation; Gaussian weights below ``1e-30`` count
    as zero there, an absolute difference below ``1e-30 * max|v|``). Elsewhere, with ``checkpoint=True``
    each chunk is recomputed in the backward pass, so training memory is bounded the same way;
    ``checkpoint=False`` runs the plain chunked path and keeps every chunk's activations (``O((HW)^2)``
    memory).

    **Windowed mode** (opt-in, ``window_radius`` in pixels or ``window_sigmas = k`` for a radius of
    ``k * sigma``): the Gaussian is truncated to zero for keys farther than the radius, and only keys in
    the band of image rows within the radius of a chunk's queries enter the ``A @ values`` product. The
    softmax denominator is still computed over **all** keys of each frame (the official code normalises
    before the Gaussian multiplies, and a local denominator would change every weight by an unbounded
    factor), so the ``query @ keys`` product still visits every key, but no approximation is made there.
    The only error is the dropped Gaussian tail: every dropped key has ``G < exp(-r^2 / (2 sigma^2))``
    and the dropped softmax mass is at most 1, so for every output element

        ``|read_windowed - read_exact| <= exp(-r^2 / (2 sigma^2)) * max_q |values_t[q, c]|``

    i.e. ``<= exp(-k^2 / 2) * max|v|`` with ``window_sigmas=k`` (k=3: 1.1e-2, k=4: 3.4e-4, k=5: 3.7e-6,
    k=6: 1.5e-8). A radius reaching every pixel gives the exact result. ``window_sigmas`` reads the
    current value of ``sigma`` into Python (a graph break under ``torch.compile``); ``window_radius`` does
    not. The truncation is not differentiated (the radius is a constant for autograd).

    Args:
        query: ``(B, Cq, H, W)`` queries (one frame).
        keys: ``(B, T, Cq, H, W)`` keys of every frame.
        values: ``(B, T, Cv, H, W)`` values of every frame.
        sigma: Gaussian width in pixels: a positive float or a 1-element tensor (differentiable).
        chunk_size: query pixels per chunk (``None``: automatic; any value gives the same result).
        window_radius: optional truncation radius of the Gaussian in pixels.
        window_sigmas: optional truncation radius in units of ``sigma`` (exclusive with ``window_radius``).
        checkpoint: bounded training memory: the fused backward where available, else chunks recomputed in
            the backward pass; ``False``: the plain chunked path with every chunk's activations stored.

    Returns:
        ``(B, T * Cv, H, W)``: the per-frame read-outs concatenated on channels, frame 0 first.

    Examples:
        >>> q, k, v = torch.randn(2, 4, 5, 7), torch.randn(2, 3, 4, 5, 7), torch.randn(2, 3, 6, 5, 7)
        >>> out = gaussian_cross_frame_attention(q, k, v, sigma=2.0)
        >>> out.shape
        torch.Size([2, 18, 5, 7])
        >>> torch.allclose(out, gaussian_cross_frame_attention(q, k, v, sigma=2.0, chunk_size=3), atol=1e-6)
        True
    """
    dims = check_shape(keys, "B T C H W", name="keys")
    b, t, cq, h, w = dims["B"], dims["T"], dims["C"], dims["H"], dims["W"]
    check_shape(query, "B C H W", name="query", B=b, C=cq, H=h, W=w)
    check_shape(values, "B T C H W", name="values", B=b, T=t, H=h, W=w)
    if window_radius is not None and window_sigmas is not None:
        raise ValueError("give at most one of window_radius and window_sigmas")
    if not isinstance(sigma, torch.Tensor):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        sigma = torch.tensor([float(sigma)], device=query.device, dtype=torch.promote_types(query.dtype, torch.float32))
    if sigma.numel() != 1:
        raise ValueError(f"sigma: expected a single value, got shape {tuple(sigma.shape)}")
    sigma = sigma.reshape(())
    radius: float | None = None
    if window_radius is not None:
        if window_radius < 0:
            raise ValueError(f"window_radius must be >= 0, got {window_radius}")
        radius = float(window_radius)
    elif window_sigmas is not None:
        if window_sigmas < 0:
            raise ValueError(f"window_sigmas must be >= 0, got {window_sigmas}")
        radius = float(window_sigmas) * abs(float(sigma.detach()))
    n = h * w
    explicit_chunk = chunk_size
    # an exported graph cannot loop a size-dependent number of times: there, one chunk of every query
    exporting = torch.compiler.is_exporting()
    if exporting:
        chunk_size = n
    elif chunk_size is None:
        chunk_size = default_chunk_size(b, t, n, query.element_size())
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    else:
        chunk_size = min(int(chunk_size), n)

    q = rearrange(query, "b c h w -> b (h w) c")
    k = rearrange(keys, "b t c h w -> b t c (h w)")
    v = rearrange(values, "b t c h w -> b t (h w) c").contiguous()  # one copy, not one per chunk
    track = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sigma))
    recompute = checkpoint and chunk_size < n and track
    if _fused_supported(query) and (checkpoint or not track):
        fused_chunk = fused_chunk_size(n, query.element_size()) if explicit_chunk is None else chunk_size
        if track:
            out = _FusedAttention.apply(q, k, v, sigma, h, w, radius, fused_chunk)
        else:
            # Without autograd both paths are exact and which is faster depends on the CPU (two flash passes
            # against plain matrix products, issue 22): timed once per shape, see vsrblocks.kernel_choice.
            key = ("gaussian_cross_frame", q.shape, k.shape, v.shape, q.dtype, radius, fused_chunk, chunk_size)
            out = measured_choice(
                key,
                {
                    "fused": lambda: _fused_attention(q, k, v, sigma, h, w, radius, fused_chunk)[0],
                    "chunked": lambda: _chunked_readouts(q, k, v, sigma, h, w, radius, chunk_size, False, False),
                },
                default="fused",
            )
        return cast(torch.Tensor, rearrange(out, "b t (h w) c -> b (t c) h w", h=h))
    out = _chunked_readouts(q, k, v, sigma, h, w, radius, chunk_size, exporting, recompute)
    return rearrange(out, "b t (h w) c -> b (t c) h w", h=h)  # frame-major channels, frame 0 first


def _chunked_readouts(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    height: int,
    width: int,
    radius: float | None,
    chunk_size: int,
    exporting: bool,
    recompute: bool,
) -> torch.Tensor:
    """The read-outs ``(B, T, N, Cv)`` by plain matrix products, chunk by chunk of queries (:func:`_attend_chunk`);
    ``recompute``: each chunk recomputed in the backward pass; ``exporting``: one chunk of every query."""
    n = height * width
    reads = []
    for start in [0] if exporting else range(0, n, chunk_size):
        stop = n if exporting else min(start + chunk_size, n)
        args = (q[:, start:stop], k, v, sigma, start, stop, height, width, radius)
        if recompute:
            reads.append(_checkpoint(_attend_chunk, *args, use_reentrant=False))
        else:
            reads.append(_attend_chunk(*args))
    return reads[0] if len(reads) == 1 else torch.cat(reads, dim=2)


class GaussianCrossFrameAttention(nn.Module):
    """MANA's cross-frame non-local attention: the centre frame queries every frame of the clip.

    For a clip ``m`` of ``T`` frames (official: ``nonlocal_attention`` without its memory part):

    1. every frame is normalised separately by ``norm`` = ``GroupNorm(num_groups, C, eps=1e-6)``;
    2. ``query = phi(norm(m_c))`` from the centre frame ``c``; ``keys_t = theta(norm(m_t))`` and
       ``values_t = g(norm(m_t))`` for **every** frame, the centre frame included (1x1 convs, C -> Ci;
       note the official naming: ``phi`` makes the query, ``theta`` the keys, ``g`` the values);
    3. :func:`gaussian_cross_frame_attention` with the learnable width ``std``: per frame a softmax
       over that frame's pixels (no ``1/sqrt(d)`` scale), times the Gaussian
       ``exp(-d^2 / (2 std^2))`` of the pixel distance, not renormalised;
    4. the ``T`` read-outs, concatenated frame-major, go through ``W_z`` (1x1 conv, ``T*Ci -> C``).

    ``forward`` returns ``W_z(...)`` only: **the residual is not added** (MANA adds the un-normalised
    centre frame and the memory read-out, see :class:`~vsrblocks.attention.MANAAttention`); write
    ``clip[:, c] + block(clip)`` for the non-local residual form. ``W_z`` is zero-initialised by default
    (as in the paper and non-local networks), so a fresh block outputs zeros and starts as the identity
    inside a residual.

    Unlike the official block (size-frozen ``(HW)^2`` distance parameter, ``T = 7`` hard-coded), this one
    runs at any ``H x W`` and any ``num_frames``, in chunks of query pixels (see
    :func:`gaussian_cross_frame_attention` for the memory bound, the optional windowed mode and its
    error bound). Parameter names match the official checkpoint (``norm``, ``g``, ``theta``, ``phi``,
    ``W_z``, ``std``); the official ``D`` is geometry only and is not stored.

    Args:
        channels: feature channels C.
        num_frames: frames T of the clip (``W_z`` has ``T * Ci`` inputs; official: 7).
        inter_channels: Ci of queries/keys/values (default ``channels // 2``, official).
        num_groups: GroupNorm groups (official: 32); must divide ``channels``.
        init_sigma: initial Gaussian width ``std`` in LR pixels (learnable).
        chunk_size: query pixels per chunk (``None``: at most 64 MiB per chunk). Any value, same result.
        window_sigmas: opt-in windowed mode, truncating the Gaussian at ``window_sigmas * std`` pixels.
        window_radius: opt-in windowed mode with a fixed radius in pixels (compile-friendly).
        center_index: the query frame (default ``num_frames // 2``; 3 for the official T = 7).
        eps: GroupNorm epsilon (official 1e-6).
        zero_init: zero-initialise ``W_z`` (weight and bias).
        checkpoint: bounded training memory (fused backward, or chunks recomputed in the backward pass).

    Shape:
        - Input: ``(B, T, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> block = GaussianCrossFrameAttention(channels=16, num_frames=3, num_groups=4)
        >>> clip = torch.randn(2, 3, 16, 9, 11)
        >>> block(clip).shape
        torch.Size([2, 16, 9, 11])
        >>> block.readout(clip).shape   # input of W_z: 3 frames x Ci = 8 channels
        torch.Size([2, 24, 9, 11])
    """

    def __init__(
        self,
        channels: int,
        num_frames: int,
        inter_channels: int | None = None,
        num_groups: int = 32,
        init_sigma: float = 4.0,
        chunk_size: int | None = None,
        window_sigmas: float | None = None,
        window_radius: float | None = None,
        center_index: int | None = None,
        eps: float = 1e-6,
        zero_init: bool = True,
        checkpoint: bool = True,
    ) -> None:
        super().__init__()
        inter_channels = channels // 2 if inter_channels is None else inter_channels
        if channels < 1 or inter_channels < 1:
            raise ValueError(f"channels and inter_channels must be >= 1, got {channels} and {inter_channels}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if num_groups < 1 or channels % num_groups != 0:
            raise ValueError(f"num_groups must be >= 1 and divide channels={channels}, got {num_groups}")
        if not init_sigma > 0:
            raise ValueError(f"init_sigma must be positive, got {init_sigma}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if window_sigmas is not None and window_radius is not None:
            raise ValueError("give at most one of window_sigmas and window_radius")
        center_index = num_frames // 2 if center_index is None else center_index
        if not 0 <= center_index < num_frames:
            raise ValueError(f"center_index must be in [0, {num_frames}), got {center_index}")
        self.channels = channels
        self.num_frames = num_frames
        self.inter_channels = inter_channels
        self.num_groups = num_groups
        self.center_index = center_index
        self.chunk_size = chunk_size
        self.window_sigmas = window_sigmas
        self.window_radius = window_radius
        self.zero_init = zero_init
        self.checkpoint = checkpoint
        self.init_sigma = float(init_sigma)
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.W_z = nn.Conv2d(num_frames * inter_channels, channels, 1)
        self.std = nn.Parameter(torch.full((1,), self.init_sigma))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        for conv in (self.g, self.theta, self.phi, self.W_z):
            conv.reset_parameters()
        if self.zero_init:
            nn.init.zeros_(self.W_z.weight)
            nn.init.zeros_(cast(torch.Tensor, self.W_z.bias))
        with torch.no_grad():
            self.std.fill_(self.init_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        """The Gaussian width in pixels (the parameter ``std``)."""
        return self.std

    def _check(self, clip: torch.Tensor) -> dict[str, int]:
        return check_shape(clip, "B T C H W", name="clip", T=self.num_frames, C=self.channels)

    def normalize(self, clip: torch.Tensor) -> torch.Tensor:
        """GroupNorm of every frame separately: ``(B, T, C, H, W) -> (B, T, C, H, W)``."""
        self._check(clip)
        return cast(torch.Tensor, self.norm(clip.flatten(0, 1)).unflatten(0, clip.shape[:2]))

    def attend(self, normed: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Read-outs for given normalised frames and queries: ``(B, T, C, H, W)``, ``(B, Ci, H, W)`` ->
        ``(B, T*Ci, H, W)`` (the input of ``W_z``). Lets a caller (MANA) share the query with other blocks."""
        dims = self._check(normed)
        check_shape(query, "B C H W", name="query", B=dims["B"], C=self.inter_channels, H=dims["H"], W=dims["W"])
        flat = normed.flatten(0, 1)
        keys = self.theta(flat).unflatten(0, normed.shape[:2])
        values = self.g(flat).unflatten(0, normed.shape[:2])
        return gaussian_cross_frame_attention(
            query,
            keys,
            values,
            self.std,
            chunk_size=self.chunk_size,
            window_radius=self.window_radius,
            window_sigmas=self.window_sigmas,
            checkpoint=self.checkpoint,
        )

    def readout(self, clip: torch.Tensor) -> torch.Tensor:
        """The concatenated per-frame read-outs (input of ``W_z``): ``(B, T, C, H, W) -> (B, T*Ci, H, W)``."""
        normed = self.normalize(clip)
        return self.attend(normed, self.phi(normed[:, self.center_index]))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.W_z(self.readout(clip)))

    def extra_repr(self) -> str:
        parts = [
            f"channels={self.channels}",
            f"num_frames={self.num_frames}",
            f"inter_channels={self.inter_channels}",
            f"num_groups={self.num_groups}",
            f"center_index={self.center_index}",
            f"chunk_size={self.chunk_size}",
        ]
        if self.window_sigmas is not None:
            parts.append(f"window_sigmas={self.window_sigmas}")
        if self.window_radius is not None:
            parts.append(f"window_radius={self.window_radius}")
        return ", ".join(parts)
