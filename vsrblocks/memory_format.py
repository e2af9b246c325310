"""Keeping a batch of frames in the memory format it came in (channels-last or contiguous).

oneDNN's CPU convolutions read and write channels-last (NHWC) tensors directly; handed a contiguous (NCHW)
tensor, each convolution first reorders its input to a blocked layout and its output back, two extra passes
over the activations. A network that converts its features to channels-last once keeps that benefit only if
every block returns what it makes from non-convolution operations (concatenations, warps, patch rearranges)
in the format its input had; these helpers say which format that is.
"""

from __future__ import annotations

import torch

__all__ = ["capturing_graph", "memory_format_of", "to_memory_format"]


def capturing_graph() -> bool:
    """``torch.compile``/``torch.export`` tracing or TorchScript tracing: the compiler chooses layouts itself."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor stored channels-last (and not also contiguous), else
    ``torch.contiguous_format``; always the latter while a graph is captured.

    Examples:
        >>> x = torch.rand(2, 3, 4, 5)
        >>> memory_format_of(x), memory_format_of(x.contiguous(memory_format=torch.channels_last))
        (torch.contiguous_format, torch.channels_last)
    """
    if (
        not capturing_graph()
        and x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x`` in ``memory_format`` (no copy when it already is); unchanged while a graph is captured or when
    ``x`` is not 4-D.

    Examples:
        >>> x = to_memory_format(torch.rand(2, 3, 4, 5), torch.channels_last)
        >>> x.stride()
        (60, 1, 15, 3)
    """
    if capturing_graph() or x.dim() != 4:
        return x
    return x.contiguous(memory_format=memory_format)
