"""Shape validation shared by every public entry point.

One helper, :func:`check_shape`, checks a tensor against a named layout such as ``"B T C H W"`` and
raises a :class:`ValueError` that names the expected layout and the shape received, in the style of
kornia (``expected (B, T, C, H, W) with C=3, got (2, 4, 64, 64)``).
"""

from __future__ import annotations

import torch

__all__ = ["check_shape"]


def _describe(dims: list[str], fixed: dict[str, int]) -> str:
    layout = "(" + ", ".join(dims) + ")"
    if fixed:
        layout += " with " + ", ".join(f"{k}={v}" for k, v in fixed.items())
    return layout


def _mismatch(name: str, dims: list[str], fixed: dict[str, int], shape: tuple[int, ...]) -> str:
    # Formatted only on failure: under torch.jit.trace the sizes are tensors, and printing them on every
    # successful check was a tenth of the time of tracing a reference model.
    return f"{name}: expected {_describe(dims, fixed)}, got {shape}"


def check_shape(x: object, layout: str, name: str = "input", **fixed: int | None) -> dict[str, int]:
    """Validate ``x`` against ``layout`` and return the size bound to each axis name.

    Args:
        x: the tensor to check (anything else is rejected with a ``TypeError``).
        layout: whitespace-separated axis names, e.g. ``"B T C H W"``. An axis name that appears twice
            must have the same size at both places.
        name: how the tensor is called in the error message.
        **fixed: required sizes for some axes, e.g. ``C=3``. ``None`` values are ignored so callers
            can pass optional constraints straight through.

    Returns:
        ``{"B": 2, "T": 5, ...}``: the size of every named axis.

    Raises:
        ValueError: wrong rank, a fixed size that does not match, or inconsistent repeated axes.

    Examples:
        >>> check_shape(torch.zeros(2, 5, 3, 8, 8), "B T C H W", C=3)["T"]
        5
        >>> check_shape(torch.zeros(2, 3, 8), "B T C H W", C=3)
        Traceback (most recent call last):
        ...
        ValueError: input: expected (B, T, C, H, W) with C=3, got (2, 3, 8)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    dims = layout.split()
    constraints = {k: v for k, v in fixed.items() if v is not None}
    unknown = set(constraints) - set(dims)
    if unknown:
        raise KeyError(f"check_shape: fixed sizes {sorted(unknown)} are not axes of layout {layout!r}")
    shape = tuple(x.shape)
    if x.dim() != len(dims):
        raise ValueError(_mismatch(name, dims, constraints, shape))
    bound: dict[str, int] = {}
    for axis, size in zip(dims, shape):
        if axis in bound and bound[axis] != size:
            raise ValueError(_mismatch(name, dims, constraints, shape))
        bound[axis] = size  # not int(): under torch.export a symbolic size must stay symbolic
    for axis, size in constraints.items():
        if bound[axis] != size:
            raise ValueError(_mismatch(name, dims, constraints, shape))
    return bound
