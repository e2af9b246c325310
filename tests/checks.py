"""Assertions every block's tests share: torch.compile, half precision, batch independence."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def assert_compiles(
    module: nn.Module | Callable, *inputs: torch.Tensor, atol: float = 1e-5, backend: str = "aot_eager"
) -> None:
    """``torch.compile`` traces the block (forward and backward graphs with ``aot_eager``) and
    gives the eager result. ``aot_eager`` exercises Dynamo and AOTAutograd without Inductor's C++
    build, which would cost tens of seconds per block on a 2-core CI runner."""
    torch._dynamo.reset()
    eager = _first(module(*inputs))
    compiled = torch.compile(module, backend=backend)
    torch.testing.assert_close(_first(compiled(*inputs)), eager, atol=atol, rtol=1e-4)


def assert_half_precision_finite(
    module: nn.Module, *inputs: torch.Tensor, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """The block runs with parameters and inputs in ``dtype`` and returns finite values of that dtype."""
    half = module.to(dtype)
    out = _first(half(*(x.to(dtype) if x.is_floating_point() else x for x in inputs)))
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert torch.isfinite(out.float()).all(), "non-finite values in half-precision output"
    return out


def assert_batch_independent(module: Callable, x: torch.Tensor, *rest: torch.Tensor, atol: float = 1e-5) -> None:
    """Each sample's output depends on that sample alone: batch-of-B equals B runs of batch 1."""
    whole = _first(module(x, *rest))
    for i in range(x.shape[0]):
        single = _first(module(x[i : i + 1], *(r[i : i + 1] for r in rest)))
        torch.testing.assert_close(whole[i : i + 1], single, atol=atol, rtol=1e-4)


def assert_base_path_flip_consistent(model: nn.Module, clip: torch.Tensor, mode: str) -> None:
    """With the learned head silenced (``conv_last = 0``) a reference model returns its interpolated base
    (``mode``: "bilinear" or "bicubic", x ``model.scale``) of the centre frame or of every frame, which
    commutes with a horizontal flip of the clip."""
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
        out, out_of_flipped = model(clip), model(clip.flip(-1))
    b, t = clip.shape[:2]
    frames = clip[:, t // 2] if model.output_mode == "center" else clip.flatten(0, 1)
    base = torch.nn.functional.interpolate(frames, scale_factor=model.scale, mode=mode, align_corners=False)
    if model.output_mode != "center":
        base = base.unflatten(0, (b, t))
    torch.testing.assert_close(out, base)
    torch.testing.assert_close(out_of_flipped, out.flip(-1), atol=1e-6, rtol=0)


def fused_kernel_calls(run: Callable[[], object]) -> int:
    """How many fused oneDNN convolutions (``vsrblocks.fused_conv``) ``run()`` launched."""
    with torch.profiler.profile() as prof:
        run()
    return sum("_convolution_pointwise" in event.name for event in prof.events())
