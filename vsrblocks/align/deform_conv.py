"""Modulated deformable convolution (DCNv2) with offsets and masks predicted from a guide feature.

Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019, in the "DCN pack"
form of EDVR / BasicSR (``DCNv2Pack``) and Zooming Slow-Mo (``DCN_sep``): a plain convolution maps a
*guide* feature to the offsets and the modulation mask, and the deformable convolution is applied to a
different tensor, the feature being aligned.

Two interchangeable backends compute the same function:

- ``"torchvision"``: :func:`torchvision.ops.deform_conv2d` (CPU and CUDA kernels, no compiled extension of
  ours to build).
- ``"torch"``: a pure-PyTorch implementation (all bilinear reads in one ``grid_sample`` call, then an
  im2col-style column matrix and one matmul per convolution group; a batch whose samples exceed
  ``SAMPLES_CHUNK_BYTES`` (16 MiB) runs in chunks of whole samples, with the same result). It needs no
  compiled ops, and on the CPU it is 2-12x faster than torchvision's kernel forward and 5-20x in a training
  step, depending on size and width (``benchmarks/align.py``), so ``"auto"`` picks it there.

Offset and mask layout (torchvision's, used by both backends). For ``deform_groups = G`` and a
``kh x kw`` kernel, ``K = kh * kw`` taps enumerated row-major (tap ``k = i * kw + j``):

- ``offset``: ``(B, 2 * G * K, H_out, W_out)``; channel ``2 * (g * K + k)`` is the **y** (row)
  displacement and channel ``2 * (g * K + k) + 1`` the **x** (column) displacement, in input pixels, of
  tap ``k`` for the input channels of deformable group ``g`` (channels ``g * C_in / G ... (g + 1) * C_in / G - 1``).
  Note: y first, unlike flows, which are x first.
- ``mask``: ``(B, G * K, H_out, W_out)``; channel ``g * K + k`` multiplies the sample of tap ``k`` in group ``g``.

Tap ``(i, j)`` of output pixel ``(p, q)`` reads the input at
``(p * stride - padding + i * dilation + dy, q * stride - padding + j * dilation + dx)`` with bilinear
interpolation; samples outside the input read zeros.

Edge cases, the same in both backends unless stated: an empty batch gives an empty output; an
infinite or huge offset moves its tap outside, where it reads zero with zero gradient; a NaN offset
gives NaN in the outputs that use its tap (torchvision's CPU kernel crashes on it). In float32 the
pure-PyTorch backend interpolates between the same two pixels as torchvision for every position, so
their offset gradients agree also just below integer positions, and its interpolation fraction is
smaller than torchvision's by less than ``S * eps`` (S: the input size rounded up to a power of two;
7.6e-6 px for S = 64).
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.modules.utils import _pair

from vsrblocks.memory_format import capturing_graph
from vsrblocks.shapes import check_shape

__all__ = ["DeformConv2d", "deform_conv2d", "torchvision_available"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torchvision", "torch"]
_IntOrPair = int | tuple[int, int]


_torchvision_ok: bool | None = None

#: Bytes of bilinear samples the pure-PyTorch backend holds at once: a batch whose samples take more runs in
#: chunks of whole samples (EDVR's five frames at 64x64 and 64 channels take 47 MB). Buffers this size are reused
#: by the allocator from call to call, where glibc maps anything above 32 MiB afresh and faults its pages in at
#: every call, and the memory stays bounded at large batches. Every operation is per sample, so chunks change
#: nothing in the result.
SAMPLES_CHUNK_BYTES = 16 * 2**20


def torchvision_available() -> bool:
    """Whether torchvision's compiled ``deform_conv2d`` operator can be used (checked once, then cached)."""
    global _torchvision_ok
    if _torchvision_ok is None:
        try:
            importlib.import_module("torchvision.ops")
            _torchvision_ok = hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "deform_conv2d")
        except Exception:  # ImportError, or a torchvision built against another torch
            _torchvision_ok = False
    return _torchvision_ok


def _resolve_backend(backend: str, device: torch.device | None = None) -> str:
    if backend not in ("auto", "torchvision", "torch"):
        raise ValueError(f"backend must be 'auto', 'torchvision' or 'torch', got {backend!r}")
    if backend == "auto":
        # torchvision's CUDA kernel is the reference implementation there; on every other device the
        # grid_sample formulation is the faster one (CPU: 2-12x forward, 5-20x forward + backward) or the
        # only one (torchvision has no MPS kernel).
        on_cuda = device is not None and device.type == "cuda"
        return "torchvision" if on_cuda and torchvision_available() else "torch"
    if backend == "torchvision" and not torchvision_available():
        raise RuntimeError("backend='torchvision' requested but torchvision.ops.deform_conv2d is not available")
    return backend


class _GridCoordinate(torch.autograd.Function):
    """Normalised ``grid_sample`` coordinate (``align_corners=False``) of the pixel position ``base + offset``
    along an axis of power-of-two ``size``, such that grid_sample interpolates between the same two
    pixels as torchvision does.

    The position is ``base + offset``, rounded once, as in torchvision's kernel. Positions outside
    ``[-2, size + 1]`` read only zeros and have zero gradient in both backends; clamping them keeps
    infinite and huge offsets finite (grid_sample returns NaN for infinite coordinates). NaN stays NaN:
    a NaN offset gives NaN outputs where its tap is used. The position is then rounded *down* to a
    multiple of ``step = max(size, 4) * eps`` (float32: ``size * 2**-23`` px; 7.6e-6 px for size 64,
    1.2e-4 px for 1024), the resolution at which the normalised coordinate, and any order of operations
    in which grid_sample un-normalises it, is exact. Integers are multiples of ``step``, so the integer
    part, and with it the pixels interpolated and the neighbourhood of the offset gradient (which jumps
    at integers), is always torchvision's; the fraction is smaller than torchvision's by less than
    ``step``, so the value differs by less than ``step`` times the local pixel difference. The rounding
    is excluded from autograd: the gradient is that of the unrounded position (a custom function,
    which also saves the autograd graph of the few element-wise steps).
    """

    @staticmethod
    def forward(ctx: Any, base: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
        ctx.scale = 2.0 / size
        step = max(size, 4) * torch.finfo(offset.dtype).eps
        # In units of step (a power of two: scaling is exact, so base + offset is still rounded once).
        units = torch.add(base * (1.0 / step), offset, alpha=1.0 / step)
        units.clamp_(-2.0 / step, (size + 1.0) / step).floor_()
        return torch.add(units.new_tensor(1.0 / size - 1.0), units, alpha=step * ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        return None, grad * ctx.scale, None


def _exporting() -> bool:
    """``torch.export`` or TorchScript tracing (where sizes may be traced tensors): the plain graph path."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _grid_coordinate(base: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
    """:class:`_GridCoordinate`, or, while exporting (where a Python size inside an autograd function would
    freeze the exported graph to the example's size), the plain clamped normalisation of ``base + offset``."""
    if _exporting():
        position = (base + offset).clamp(-2.0, size + 1.0)
        return (2.0 * position + 1.0) / size - 1.0
    return cast(torch.Tensor, _GridCoordinate.apply(base, offset, size))


def _deform_conv2d_torch(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    b, c_in, height, width = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c_in // c_per_group
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    deform_groups = offset.shape[1] // (2 * taps)
    chunk = max(1, SAMPLES_CHUNK_BYTES // (c_in * taps * out_h * out_w * x.element_size()))
    if b > chunk and not capturing_graph():  # a traced graph keeps its batch size symbolic
        return torch.cat(
            [
                _deform_conv2d_torch(
                    x[i : i + chunk],
                    offset[i : i + chunk],
                    weight,
                    bias,
                    stride,
                    padding,
                    dilation,
                    None if mask is None else mask[i : i + chunk],
                )
                for i in range(0, b, chunk)
            ]
        )
    # Without an autograd graph to keep, the mask and bias are applied in place: no second buffer of samples.
    in_place = not capturing_graph() and not (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, offset, weight, bias, mask))
    )

    # One fused bilinear read of every (tap, output pixel) with grid_sample, which reads zeros outside the
    # input per corner exactly as torchvision's kernel does. The input is zero-padded (bottom/right, which
    # changes nothing read) to power-of-two sizes S, so that _GridCoordinate can hand grid_sample
    # positions it un-normalises without rounding.
    if _exporting():  # bit_length() would freeze the size; unpadded positions round once more
        size_h, size_w = height, width
    else:
        size_h, size_w = 1 << (height - 1).bit_length(), 1 << (width - 1).bit_length()
    x_groups = rearrange(x, "b (g c) h w -> (b g) c h w", g=deform_groups)
    if (size_h, size_w) != (height, width):
        x_groups = F.pad(x_groups, (0, size_w - width, 0, size_h - height))
    # Base position (input pixels, exact integers) of every (tap, output pixel).
    dtype, device = offset.dtype, offset.device
    rows = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]
    cols = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    tap_rows = torch.arange(kh, device=device, dtype=dtype) * dilation[0]
    tap_cols = torch.arange(kw, device=device, dtype=dtype) * dilation[1]
    base_y = (
        (tap_rows[:, None, None, None] + rows[None, None, :, None])
        .expand(kh, kw, out_h, out_w)
        .reshape(taps, out_h, out_w)
    )
    base_x = (
        (tap_cols[None, :, None, None] + cols[None, None, None, :])
        .expand(kh, kw, out_h, out_w)
        .reshape(taps, out_h, out_w)
    )
    offset = rearrange(offset, "b (g k two) h w -> (b g) k two h w", g=deform_groups, k=taps, two=2)
    grid_x = _grid_coordinate(base_x, offset[:, :, 1], size_w)
    grid_y = _grid_coordinate(base_y, offset[:, :, 0], size_h)
    grid = rearrange(torch.stack((grid_x, grid_y), dim=-1), "n k h w two -> n (k h) w two")
    sampled = F.grid_sample(x_groups, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = rearrange(sampled, "(b g) c (k h) w -> b g c k h w", g=deform_groups, k=taps)
    if mask is not None:
        mask = rearrange(mask, "b (g k) h w -> b g 1 k h w", g=deform_groups, k=taps)
        sampled = sampled.mul_(mask) if in_place else sampled * mask
    columns = rearrange(sampled, "b g c k h w -> b (g c) k (h w)")
    columns = rearrange(columns, "b (n c) k l -> b n (c k) l", n=groups)
    weight = rearrange(weight, "(n o) c i j -> n o (c i j)", n=groups)
    out = torch.matmul(weight, columns)  # (n, o, ck) @ (b, n, ck, l): one matmul per convolution group
    out = rearrange(out, "b n o (h w) -> b (n o) h w", h=out_h)
    if bias is not None:
        out = out.add_(bias[None, :, None, None]) if in_place else out + bias[None, :, None, None]
    return out


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: _IntOrPair = 1,
    padding: _IntOrPair = 0,
    dilation: _IntOrPair = 1,
    mask: torch.Tensor | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Modulated deformable convolution, with torchvision's signature and offset/mask layout.

    The convolution groups are ``C_in // weight.shape[1]`` and the deformable groups
    ``offset.shape[1] // (2 * kh * kw)``, as in :func:`torchvision.ops.deform_conv2d`. The layout of
    ``offset`` and ``mask`` is described in this module's docstring (``(dy, dx)`` pairs per tap, y
    first). bfloat16 inputs are computed in float32 and cast back (torchvision has no bfloat16 kernel,
    and bfloat16 cannot hold sampling positions precisely).

    Args:
        x: the feature to sample.
        offset: per-tap sampling displacements in pixels.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride: as for :func:`torch.nn.functional.conv2d`.
        padding: as for :func:`torch.nn.functional.conv2d`.
        dilation: as for :func:`torch.nn.functional.conv2d`.
        mask: modulation scalars (DCNv2), or ``None`` for DCNv1 (all ones).
        backend: ``"torchvision"``, ``"torch"`` (pure PyTorch) or ``"auto"`` (torchvision on CUDA when
            available, pure PyTorch elsewhere).

    Shape:
        - x: ``(B, C_in, H, W)``
        - offset: ``(B, 2 * G * kh * kw, H_out, W_out)``; mask: ``(B, G * kh * kw, H_out, W_out)``
        - Output: ``(B, C_out, H_out, W_out)``

    Examples:
        >>> import torch.nn.functional as F
        >>> x, w = torch.randn(1, 4, 6, 7), torch.randn(8, 4, 3, 3)
        >>> offset = torch.zeros(1, 2 * 9, 6, 7)
        >>> out = deform_conv2d(x, offset, w, padding=1, backend="torch")
        >>> torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    stride, padding, dilation = cast(tuple[tuple[int, int], ...], (_pair(stride), _pair(padding), _pair(dilation)))
    dims = check_shape(x, "B C H W", name="x")
    c_out, c_per_group, kh, kw = check_shape(weight, "O I kh kw", name="weight").values()
    if dims["C"] % c_per_group != 0 or c_out % (dims["C"] // c_per_group) != 0:
        raise ValueError(
            f"weight: expected (C_out, C_in / groups, kh, kw) with groups dividing C_in={dims['C']} and C_out, "
            f"got {tuple(weight.shape)}"
        )
    out_h = (dims["H"] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (dims["W"] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: input {tuple(x.shape)} is smaller than the (dilated) kernel ({kh}, {kw}) after padding")
    off = check_shape(offset, "B C H W", name="offset", B=dims["B"], H=out_h, W=out_w)
    taps = kh * kw
    if off["C"] % (2 * taps) != 0 or off["C"] == 0 or dims["C"] % (off["C"] // (2 * taps)) != 0:
        raise ValueError(
            f"offset: expected (B, 2 * G * {taps}, {out_h}, {out_w}) with G dividing C_in={dims['C']}, "
            f"got {tuple(offset.shape)}"
        )
    if mask is not None:
        check_shape(mask, "B C H W", name="mask", B=dims["B"], C=off["C"] // 2, H=out_h, W=out_w)
    if bias is not None:
        check_shape(bias, "O", name="bias", O=c_out)

    out_dtype = x.dtype
    if out_dtype not in (torch.float32, torch.float64):
        x, offset, weight = x.float(), offset.float(), weight.float()
        bias = None if bias is None else bias.float()
        mask = None if mask is None else mask.float()
    if _resolve_backend(backend, x.device) == "torchvision":
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        out = tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    else:
        out = _deform_conv2d_torch(x, offset, weight, bias, stride, padding, dilation, mask)
    return cast(torch.Tensor, out.to(out_dtype))


class DeformConv2d(nn.Module):
    """Modulated deformable convolution whose offsets and mask are predicted from a guide feature.

    EDVR/BasicSR's ``DCNv2Pack`` and Zooming Slow-Mo's ``DCN_sep``: ``conv_offset`` (a ``kernel_size``
    convolution with the main convolution's stride, padding and dilation) maps ``guide`` to
    ``3 * deform_groups * kh * kw`` channels, split into thirds ``(o1, o2, m)``; the offsets are
    ``cat(o1, o2)`` in the layout of :func:`deform_conv2d` and the mask is ``sigmoid(m)``. The
    deformable convolution is then applied to ``x``.

    Initialisation (BasicSR / ZSM conventions): ``conv_offset`` is **zero-initialised**, so a fresh
    module has zero offsets and mask 0.5 everywhere, i.e. it starts as a plain convolution whose output
    (before the bias) is halved. The main weight is uniform in ``+-1 / sqrt(C_in * kh * kw)`` and the bias 0.
    Parameter names (``weight``, ``bias``, ``conv_offset.*``) match BasicSR's ``DCNv2Pack`` checkpoints.

    In training mode, if the mean absolute offset exceeds ``max_offset_warn`` pixels a warning is logged
    (BasicSR uses 50, ZSM 100; a sign of diverging training). The check costs a device synchronisation,
    so it is skipped in eval mode and under ``torch.compile``.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of the output.
        kernel_size: of the deformable (and the offset) convolution.
        stride: of the deformable (and the offset) convolution.
        padding: of the deformable (and the offset) convolution.
        dilation: of the deformable (and the offset) convolution.
        groups: convolution groups of the deformable convolution.
        deform_groups: G, groups of input channels sharing one set of offsets and mask.
        guide_channels: channels of ``guide`` (default ``in_channels``).
        bias: whether the deformable convolution has a bias.
        backend: ``"auto"`` (torchvision on CUDA when available, pure PyTorch elsewhere), ``"torchvision"``
            or ``"torch"`` (pure PyTorch).
        max_offset_warn: threshold of the offset warning in pixels, or ``None`` for no check.

    Shape:
        - x: ``(B, in_channels, H, W)``; guide: ``(B, guide_channels, H, W)`` (default: ``x``)
        - Output: ``(B, out_channels, H_out, W_out)``, as for :class:`torch.nn.Conv2d`

    Examples:
        >>> dcn = DeformConv2d(16, 16, deform_groups=4, guide_channels=8)
        >>> dcn(torch.randn(2, 16, 9, 11), torch.randn(2, 8, 9, 11)).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair = 3,
        stride: _IntOrPair = 1,
        padding: _IntOrPair = 1,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        deform_groups: int = 8,
        guide_channels: int | None = None,
        bias: bool = True,
        backend: Backend = "auto",
        max_offset_warn: float | None = 50.0,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if in_channels % deform_groups:
            raise ValueError(f"deform_groups={deform_groups} must divide in_channels={in_channels}")
        _resolve_backend(backend)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.guide_channels = in_channels if guide_channels is None else guide_channels
        self.backend = backend
        self.max_offset_warn = max_offset_warn
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            self.guide_channels,
            3 * deform_groups * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(cast(torch.Tensor, self.conv_offset.bias))

    def offset_and_mask(self, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets ``(B, 2 G kh kw, H_out, W_out)`` and mask ``(B, G kh kw, H_out, W_out)`` for ``guide``."""
        # The first two thirds (o1, o2) are already the offsets in cat(o1, o2) order: a view, no copy.
        out = self.conv_offset(guide)
        split = 2 * out.shape[1] // 3
        return out[:, :split], torch.sigmoid(out[:, split:])

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        dims = check_shape(x, "B C H W", name="x", C=self.in_channels)
        if guide is None:
            guide = x
        check_shape(guide, "B C H W", name="guide", B=dims["B"], C=self.guide_channels, H=dims["H"], W=dims["W"])
        offset, mask = self.offset_and_mask(guide)
        if self.training and self.max_offset_warn is not None and not torch.compiler.is_compiling():
            mean_offset = offset.detach().abs().mean()
            if mean_offset > self.max_offset_warn:
                logger.warning(
                    "DeformConv2d: mean absolute offset %.1f px exceeds %s", mean_offset, self.max_offset_warn
                )
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask, backend=self.backend
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deform_groups={self.deform_groups}, guide_channels={self.guide_channels}, backend={self.backend!r}"
        )
