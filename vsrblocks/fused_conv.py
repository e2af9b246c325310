"""A convolution with its activation or its residual addition fused in (oneDNN post-ops), for CPU inference.

Residual stacks spend a pass over the features on every ReLU/LeakyReLU and every skip addition after each
convolution. oneDNN can apply both inside the convolution as it writes its output ("post-ops", the same
kernels ``torch.compile`` uses on CPU), which saves those passes without a compile step. The fused kernel runs
only where PyTorch would itself run the convolution with oneDNN (not, e.g., for small 1x1 convolutions, which it
computes as a matrix product), so in float32 the result is bit-identical to the separate operations: the same
sum is rounded to float32 either way, and the activation or the addition then acts on that value.

The fused kernels have no autograd formula and are invisible to module hooks and to dispatch modes such as
:class:`torch.utils.flop_counter.FlopCounterMode`, so the plain operations run instead whenever any of these
could tell the difference: gradients are wanted, the convolution has hooks, a dispatch mode or autocast is on,
a graph is being captured, or the tensors are not float32 on a CPU with oneDNN enabled.

oneDNN's ReLU post-op is ``max(y, 0)``, which turns a NaN into 0 where :func:`torch.relu` keeps it, and nothing
promises that its LeakyReLU never does the same. A NaN before the activation needs a NaN or an infinity among the
input, the weights and the bias, or a sum that overflows (``inf - inf``); :func:`conv2d_activation` rules all of
these out with a bound on ``|conv(x)|`` from the largest magnitudes of the input, the weights and the bias (one
reduction over each tensor's memory in order, one read of the three results) before it fuses, and otherwise runs
the plain operations, so bad input or weights are never masked.

Only float32 is fused. oneDNN's bfloat16 kernels take the post-ops too (within a bfloat16 rounding of the
separate operations: the post-op acts before the one rounding), and alone they are 2-5 % faster than the
convolution and a separate pass; but the NaN guard's reduction over the input costs as much as that pass, so
behind it the fused call was 3-15 % slower for 64->64 3x3 convolutions on 1-5 frames of 64x64 on an AMD EPYC with
AVX-512 BF16 and no AMX (1 thread, ``benchmarks/fused_conv.py``), and VSRT's bfloat16 pass 6-9 % slower. float16
kernels need AVX-512 FP16 or AVX-NE-CONVERT, which that CPU lacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.utils._python_dispatch import _get_current_dispatch_mode

from vsrblocks.memory_format import capturing_graph
from vsrblocks.shapes import check_shape

__all__ = ["conv2d_activation", "conv2d_add", "fusion_enabled", "unfused"]

Activation = Literal["relu", "leaky_relu"]

_ENABLED = True


def fusion_enabled() -> bool:
    """Whether :func:`conv2d_activation`/:func:`conv2d_add` may use fused kernels (see :func:`unfused`)."""
    return _ENABLED


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Run every convolution, activation and addition as separate operations inside this context (to compare
    against, or to time the unfused form).

    Examples:
        >>> with unfused():
        ...     fusion_enabled()
        False
    """
    global _ENABLED
    previous, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = previous


def _has_kernels() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018 (a lookup: absent from builds without oneDNN)
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch._C, "_select_conv_backend")


_KERNELS = _has_kernels()

#: Far enough below float32's largest value (3.4e38) that no partial sum of a convolution bounded by it overflows,
#: whatever the summation order or algorithm; real features are many orders of magnitude smaller.
_SAFE_MAGNITUDE = 2.0**100


def _fusable(conv: nn.Conv2d, *tensors: torch.Tensor) -> bool:
    if not (_ENABLED and _KERNELS and torch.backends.mkldnn.enabled) or capturing_graph():
        return False
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if (
        conv._forward_hooks
        or conv._forward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
    ):
        return False
    if torch.is_autocast_enabled("cpu") or _get_current_dispatch_mode() is not None:
        return False
    params = [conv.weight] + ([] if conv.bias is None else [conv.bias])
    everything = (*tensors, *params)
    if torch.is_grad_enabled() and any(t.requires_grad for t in everything):
        return False
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in everything):
        return False
    padding, stride, dilation, groups = _conv_args(conv)
    backend = torch._C._select_conv_backend(
        tensors[0], conv.weight, conv.bias, stride, padding, dilation, False, [0, 0], groups, None
    )
    return cast(bool, backend == torch._C._ConvBackend.Mkldnn)  # type: ignore[attr-defined]


def _surely_no_nan(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` cannot hold a NaN: every input, weight and bias finite, and every sum bounded by
    ``max|x| * max|w| * fan_in + max|b|`` far from overflowing (a NaN or infinity makes the bound NaN or infinite,
    so the comparison fails). One reduction per tensor and a single device-to-host read for all three: the weights
    are checked on every call, so no way of changing them (``.data`` writes included) can slip a NaN past."""
    tensors = (x, conv.weight) if conv.bias is None else (x, conv.weight, conv.bias)
    magnitudes: list[float] = torch.stack([_largest_magnitude(t) for t in tensors]).tolist()
    bias = magnitudes[2] if conv.bias is not None else 0.0
    return magnitudes[0] * magnitudes[1] * conv.weight[0].numel() + bias <= _SAFE_MAGNITUDE


def _largest_magnitude(t: torch.Tensor) -> torch.Tensor:
    """``max |t|`` as a 0-dim tensor, NaN if ``t`` holds one (a single pass, no temporary the size of ``t``)."""
    if t.numel() == 0:
        return t.new_zeros((), dtype=torch.float32)
    low, high = torch.aminmax(_flat(t))
    return torch.maximum(high, low.neg()).float()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements as a 1-D view in memory order when it is stored densely in some dimension order
    (contiguous, channels-last), else ``t``. A full reduction over a channels-last tensor in its logical order
    takes 5-8x as long as over its memory (torch.aminmax of 5x64x64x64 float32 on an AMD EPYC, 1 thread:
    1.2 ms against 0.16 ms)."""
    permuted = t.permute(sorted(range(t.dim()), key=t.stride, reverse=True))
    return permuted.view(-1) if permuted.is_contiguous() else t


def _conv_args(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    padding = cast(tuple[int, ...], conv.padding)  # integer padding: _fusable checks it
    return list(padding), list(conv.stride), list(conv.dilation), conv.groups


def conv2d_activation(
    conv: nn.Conv2d, x: torch.Tensor, activation: Activation, negative_slope: float = 0.01
) -> torch.Tensor:
    """``activation(conv(x))`` with the activation applied inside the convolution where that is exact and
    possible (see the module notes), else as a separate operation.

    Args:
        conv: a 2-D convolution (its padding mode must be ``"zeros"`` for the fused kernel).
        x: its input.
        activation: ``"relu"`` or ``"leaky_relu"``.
        negative_slope: the LeakyReLU slope.

    Shape:
        - x: ``(B, C_in, H, W)``
        - Output: ``(B, C_out, H', W')``, in the memory format of ``x``

    Examples:
        >>> conv = nn.Conv2d(4, 8, 3, padding=1)
        >>> with torch.no_grad():
        ...     conv2d_activation(conv, torch.rand(1, 4, 5, 6), "leaky_relu", 0.1).shape
        torch.Size([1, 8, 5, 6])
    """
    if activation not in ("relu", "leaky_relu"):
        raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
    check_shape(x, "B C H W", name="x", C=conv.in_channels)
    if not (_fusable(conv, x) and _surely_no_nan(conv, x)):
        y = conv(x)
        return F.relu(y) if activation == "relu" else F.leaky_relu(y, negative_slope)
    scalars = [] if activation == "relu" else [negative_slope]
    return cast(
        torch.Tensor,
        torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *_conv_args(conv), activation, scalars, ""),
    )


def conv2d_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``other + conv(x)`` (a residual connection) with the addition done inside the convolution where that
    is exact and possible (see the module notes), else as a separate operation.

    Shape:
        - x: ``(B, C_in, H, W)``
        - other: the convolution's output shape ``(B, C_out, H', W')``; no broadcasting
        - Output: ``(B, C_out, H', W')``

    Examples:
        >>> conv = nn.Conv2d(4, 4, 3, padding=1)
        >>> x = torch.rand(1, 4, 5, 6)
        >>> with torch.no_grad():
        ...     torch.equal(conv2d_add(conv, x, x), x + conv(x))
        True
    """
    check_shape(x, "B C H W", name="x", C=conv.in_channels)
    if not _fusable(conv, x, other):
        y = conv(x)
        _check_residual(other, y.shape)
        return cast(torch.Tensor, other + y)
    _check_residual(other, _output_shape(conv, x))
    out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, *_conv_args(conv), "add", None, None, [], None
    )
    return out


def _check_residual(other: torch.Tensor, shape: tuple[int, ...]) -> None:
    batch, channels, height, width = shape
    check_shape(other, "B C H W", name="other", B=batch, C=channels, H=height, W=width)


def _output_shape(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, ...]:
    """The convolution's output shape, without running it (integer padding, as :func:`_fusable` requires)."""
    sizes = [
        (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
        for size, pad, dil, kernel, stride in zip(
            x.shape[-2:], cast(tuple[int, ...], conv.padding), conv.dilation, conv.kernel_size, conv.stride
        )
    ]
    return (x.shape[0], conv.out_channels, *sizes)
