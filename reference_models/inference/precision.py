"""Inference in bfloat16 where the hardware multiplies it fast, with float32 kept where accuracy needs it.

``precision="bfloat16"`` runs a float32 model under autocast: convolutions and matrix products take bfloat16
inputs and weights (float32 accumulation), everything the autocast lists do not name runs in the dtype of its
inputs. Some parts stay float32 -- *float32 islands*, run with autocast off on inputs cast to float32, returning
float32:

- flows and warping: SPyNet; ``grid_sample`` (``flow_warp``, the reads of deformable convolutions) is on
  autocast's float32 list already, and the convolution that makes a deformable convolution's offsets
  (``conv_offset``) is an island, so sampling positions are float32 throughout;
- normalisation layers (their statistics);
- MANA's attention (:class:`~vsrblocks.attention.MANAAttention` and its parts): an unscaled softmax over
  thousands of keys, where a bfloat16 logit of magnitude 50 is off by 0.1 and its weight by 10 %, the Gaussian
  prior and the memory bank; for the same reason the other unscaled (DANet/SAGAN-style) softmax attentions,
  position, channel and masked self-attention (DASAA, MAFnet); VSRT's STCSA divides its logits by
  ``sqrt(C p^2)`` and stays bfloat16;
- the network's own list: the names of submodules in its class attribute ``float32_modules``.

The bilinear (bicubic) skip every network adds at the end is computed from the float32 input clip by an
operation autocast does not list, so it stays float32, and ``residual (bfloat16) + base (float32)`` is summed in
float32: the output keeps the base exactly and carries only the residual's rounding.

A new network needs nothing for the generic islands above and names its own in ``float32_modules``.

Why autocast and not bfloat16 weights: autocast casts a weight once per forward pass (its cache lives as long as
the context), a few hundred thousand numbers against the millions of activations each convolution reads, and
the float32 islands need no second copy of their weights. Measured on an AMD EPYC (AVX-512 BF16, no AMX, 2
threads, a loaded machine): a 128->128 3x3 convolution on 7x64x112 channels-last takes 271 ms in float32, 112 ms
with bfloat16 weights and inputs, 155 ms under autocast from bfloat16 inputs (noise of the shared machine
included); a whole network's ratio is in ``benchmarks/precision.py``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from reference_models.inference.hardware import bfloat16_flag

__all__ = [
    "PRECISIONS",
    "Precision",
    "FLOAT32_TYPES",
    "compute_dtype",
    "float32_islands",
    "low_precision_weights",
    "mixed_dtype",
    "mixed_precision",
    "model_device_dtype",
    "resolve_precision",
]

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


def _float32_types() -> tuple[type[nn.Module], ...]:
    from vsrblocks.align.spynet import SPyNet
    from vsrblocks.attention.channel_self_attention import ChannelSelfAttention
    from vsrblocks.attention.gaussian_cross_frame import GaussianCrossFrameAttention
    from vsrblocks.attention.masked_self_attention import MaskedSelfAttention
    from vsrblocks.attention.memory import MANAAttention, MemoryAugmentedAttention
    from vsrblocks.attention.position_attention import PositionAttention

    norms = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
    attentions = (
        GaussianCrossFrameAttention,
        MemoryAugmentedAttention,
        MANAAttention,
        PositionAttention,
        ChannelSelfAttention,
        MaskedSelfAttention,
    )
    return (*norms, SPyNet, *attentions)


#: Module types that run in float32 wherever they appear (see the module notes).
FLOAT32_TYPES: tuple[type[nn.Module], ...] = _float32_types()


def _entry_points(module: nn.Module) -> tuple[str, ...]:
    """The methods through which networks call ``module`` (DASAA calls ``MaskedSelfAttention.align``)."""
    from vsrblocks.attention.masked_self_attention import MaskedSelfAttention

    return ("forward", "align") if isinstance(module, MaskedSelfAttention) else ("forward",)


def resolve_precision(precision: str, device: torch.device | str) -> tuple[torch.dtype, str]:
    """The compute dtype ``precision`` means on ``device``, and why.

    ``"auto"``: bfloat16 on CPUs with AMX or AVX-512 BF16 instructions (``amx_bf16`` / ``avx512_bf16`` in
    ``/proc/cpuinfo``) and on CUDA devices that support it natively, float32 elsewhere (without those
    instructions bfloat16 is emulated and slower than float32).

    Examples:
        >>> resolve_precision("float32", "cpu")
        (torch.float32, 'float32 (asked for)')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return getattr(torch, precision), f"{precision} (asked for)"
    device = torch.device(device)
    if device.type == "cpu":
        flag = bfloat16_flag()
        if flag is not None:
            return torch.bfloat16, f"bfloat16 (auto: the CPU multiplies bfloat16 in hardware, {flag})"
        return torch.float32, "float32 (auto: the CPU has neither amx_bf16 nor avx512_bf16, bfloat16 would be slower)"
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16, f"bfloat16 (auto: {torch.cuda.get_device_name(device)} supports it)"
        return torch.float32, "float32 (auto: this CUDA device has no native bfloat16)"
    return torch.float32, f"float32 (auto: no bfloat16 rule for {device.type} devices)"


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``model``'s first floating-point parameter or buffer (CPU, float32 if none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def compute_dtype(model: nn.Module, precision: str) -> tuple[torch.dtype, str]:
    """The dtype ``model``'s convolutions run in under ``precision``, and why.

    ``"float32"`` runs the model as it is (a model cast to another dtype runs in that dtype); ``"bfloat16"``
    needs a float32 model; ``"auto"`` picks bfloat16 where :func:`resolve_precision` does and the model is
    float32, else runs it as it is.

    Examples:
        >>> from reference_models import create_model
        >>> compute_dtype(create_model("mana", "tiny"), "float32")
        (torch.float32, 'float32 (asked for)')
    """
    device, dtype = model_device_dtype(model)
    wanted, reason = resolve_precision(precision, device)
    if dtype == torch.float32:
        return wanted, reason
    if precision == "bfloat16":
        raise ValueError(f"precision='bfloat16' runs a float32 model in mixed precision; this model is {dtype}")
    return dtype, f"{str(dtype).removeprefix('torch.')} (the model's own dtype)"


def mixed_dtype(model: nn.Module, precision: str) -> torch.dtype:
    """What :func:`mixed_precision` and :func:`low_precision_weights` take for ``precision``: the compute dtype of
    :func:`compute_dtype` for a float32 model, ``torch.float32`` (no change) for a model cast to another dtype."""
    dtype, _ = compute_dtype(model, precision)
    return dtype if model_device_dtype(model)[1] == torch.float32 else torch.float32


def float32_islands(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost submodules of ``model`` that run in float32 under :func:`mixed_precision`: instances of
    :data:`FLOAT32_TYPES`, deformable convolutions' ``conv_offset``, and the names in ``float32_modules`` of
    ``model`` and of its submodules (relative to the module that declares them).

    Examples:
        >>> from reference_models import create_model
        >>> [name for name, _ in float32_islands(create_model("mana", "tiny"))]
        ['attention']
    """
    from vsrblocks.align.deform_conv import DeformConv2d

    chosen: dict[int, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, FLOAT32_TYPES):
            chosen[id(module)] = name
        if isinstance(module, DeformConv2d):
            chosen[id(module.conv_offset)] = f"{name}.conv_offset".lstrip(".")
        for declared in getattr(type(module), "float32_modules", ()):
            chosen[id(module.get_submodule(declared))] = f"{name}.{declared}".lstrip(".")
    islands: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if id(module) in chosen and not any(name.startswith(f"{outer}.") for outer, _ in islands):
            islands.append((name, module))
    return islands


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple (e.g. a ConvLSTM state)
        return type(value)(*(_to_float32(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def _island_forward(forward: Any, device_type: str) -> Any:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, enabled=False):
            return forward(*_to_float32(args), **_to_float32(kwargs))

    setattr(run, "float32_island", True)  # noqa: B010 (an attribute of the wrapper function)
    return run


@contextlib.contextmanager
def mixed_precision(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Run ``model`` in ``dtype`` inside this context: autocast with the float32 islands of
    :func:`float32_islands` (module notes). ``torch.float32`` changes nothing.

    The islands' ``forward`` is replaced for the duration of the context (instance attributes, removed on
    exit); keep the context around single forward passes, not across ``yield`` s, since autocast's state belongs
    to the thread.

    Examples:
        >>> from reference_models import create_model
        >>> model = create_model("vsrt", "tiny").eval()
        >>> with torch.no_grad(), mixed_precision(model):
        ...     out = model(torch.rand(1, 3, 3, 8, 8))
        >>> out.dtype   # the residual is bfloat16, the bilinear base float32: summed in float32
        torch.float32
    """
    if dtype == torch.float32:
        yield
        return
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"mixed precision runs in bfloat16 or float16, got {dtype}")
    device_type = _device_type(model)
    patched: list[tuple[nn.Module, str, Any]] = []
    for _, module in float32_islands(model):
        for method in _entry_points(module):
            bound = getattr(module, method)
            if getattr(bound, "float32_island", False):  # a nested context already made it an island
                continue
            patched.append((module, method, module.__dict__.get(method)))
            setattr(module, method, _island_forward(bound, device_type))
    try:
        with torch.autocast(device_type, dtype=dtype):
            yield
    finally:
        for module, method, own in patched:
            if own is None:
                delattr(module, method)
            else:
                setattr(module, method, own)


def _device_type(model: nn.Module) -> str:
    first = next((p for p in (*model.parameters(), *model.buffers()) if p.is_floating_point()), None)
    return first.device.type if first is not None else "cpu"


@contextlib.contextmanager
def low_precision_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Hold the float32 parameters of every module outside the float32 islands in ``dtype`` inside this context
    (the float32 originals come back on exit); ``torch.float32`` changes nothing.

    Under :func:`mixed_precision` autocast would otherwise cast each weight again in every forward pass (one
    copy per convolution per pass, 10-30 % of a VSRT pass on a busy 2-core machine); held in ``dtype`` across
    the passes of a whole clip, it casts nothing. The context may span ``yield`` s (parameters are not
    thread state); only :func:`mixed_precision` runs the model correctly inside it, since the first
    convolution receives float32 frames.

    Examples:
        >>> from reference_models import create_model
        >>> model = create_model("mana", "tiny")
        >>> with low_precision_weights(model):
        ...     model.conv_first.weight.dtype, model.attention.cross.g.weight.dtype
        (torch.bfloat16, torch.float32)
        >>> model.conv_first.weight.dtype
        torch.float32
    """
    if dtype == torch.float32:
        yield
        return
    kept = {id(p) for _, island in float32_islands(model) for p in island.parameters()}
    originals: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for param in model.parameters():
                if id(param) not in kept and param.dtype == torch.float32:
                    originals.append((param, param.data))
                    # channels-last weights: oneDNN's bfloat16 convolutions want that layout (a reorder per
                    # call otherwise), and a 4-D weight in it makes the convolution's output channels-last too
                    layout = torch.channels_last if param.dim() == 4 else torch.preserve_format
                    param.data = param.data.to(dtype, memory_format=layout)
        yield
    finally:
        for param, data in originals:
            param.data = data
