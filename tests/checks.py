"""Assertions every block's tests share: torch.compile, half precision, batch independence."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def assert_compiles(module: nn.Module | Callable, *inputs: torch.Tensor, atol: float = 1e-5, backend: str = "aot_eager") -> None:
    """``torch.compile`` traces the block (forward and backward graphs with ``aot_eager``) and
    gives the eager result. ``aot_eager`` exercises Dynamo and AOTAutograd without Inductor's C++
    build, which would cost tens of seconds per block on a 2-core CI runner."""
    torch._dynamo.reset()
    eager = _first(module(*inputs))
    compiled = torch.compile(module, backend=backend)
    torch.testing.assert_close(_first(compiled(*inputs)), eager, atol=atol, rtol=1e-4)


def assert_half_precision_finite(module: nn.Module, *inputs: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
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
