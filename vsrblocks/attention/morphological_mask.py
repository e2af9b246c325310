"""Grey-scale and binary mathematical morphology on masks with tensor operations only.

The clean-up of PASSRnet's validity mask (Wang et al., "Learning Parallax Attention for Stereo Image
Super-Resolution", CVPR 2019, official ``models.py::morphologic_process``), which DASAA's "self-attention
structure with the morphological mask" is read as, runs scikit-image on the CPU. Here every step is a
tensor operation that runs per sample on any device, and ``backend="skimage"`` keeps the exact CPU path
for fidelity checks.

Border convention (all functions): pixels outside the image are **ignored**, i.e. dilation pads with
``-inf`` and erosion with ``+inf``. So ``erode(x) == -dilate(-x)`` holds exactly, a binary mask stays
binary, and on binary masks the result equals scikit-image's ``binary_*`` functions (whose default
``mode="ignore"`` means the same). To treat the outside as zeros instead (PASSRnet zero-pads the
occlusion mask by 3 pixels before its closing), give :class:`MorphologicalMask` a ``padding``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = [
    "MorphologicalMask",
    "make_footprint",
    "dilate",
    "erode",
    "opening",
    "closing",
    "morphological_gradient",
    "remove_small_objects",
    "remove_small_holes",
]

Footprint = Literal["square", "disk"]
Operation = Literal["dilate", "erode", "open", "close", "gradient", "none"]
_FOOTPRINTS = ("square", "disk")
#: Iterations of each connected-component loop in an exported graph (eager code iterates to convergence).
EXPORT_ITERATIONS = 32
_OPERATIONS = ("dilate", "erode", "open", "close", "gradient", "none")


def make_footprint(kernel_size: int, footprint: Footprint = "square") -> torch.Tensor:
    """The structuring element as a ``(kernel_size, kernel_size)`` bool tensor.

    ``"square"``: all ones. ``"disk"``: the pixels with ``dy^2 + dx^2 <= r^2``, ``r = kernel_size // 2``,
    which is ``skimage.morphology.disk(r)`` (``disk(1)`` is the 4-neighbour cross).

    Args:
        kernel_size: odd side of the footprint.
        footprint: ``"square"`` or ``"disk"``.

    Returns:
        ``(kernel_size, kernel_size)`` bool tensor.

    Examples:
        >>> make_footprint(3, "disk").int()
        tensor([[0, 1, 0],
                [1, 1, 1],
                [0, 1, 0]], dtype=torch.int32)
    """
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if footprint not in _FOOTPRINTS:
        raise ValueError(f"footprint must be one of {_FOOTPRINTS}, got {footprint!r}")
    if footprint == "square":
        return torch.ones(kernel_size, kernel_size, dtype=torch.bool)
    r = kernel_size // 2
    offsets = torch.arange(-r, r + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= r * r


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def _restore(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return y if like.is_floating_point() else y.to(like.dtype)


def _dilate(x: torch.Tensor, kernel_size: int, footprint: Footprint) -> torch.Tensor:
    if footprint == "square":
        return F.max_pool2d(x, kernel_size, stride=1, padding=kernel_size // 2)
    r = kernel_size // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), value=float("-inf"))
    # A running max over shifted views keeps memory at O(H W) whatever the footprint.
    out = None
    # offsets from Python ints, not make_footprint(...).nonzero(): a tensor's values cannot decide an exported loop
    disk = [
        (dy, dx) for dy in range(kernel_size) for dx in range(kernel_size) if (dy - r) ** 2 + (dx - r) ** 2 <= r * r
    ]
    for dy, dx in disk:
        view = padded[..., dy : dy + height, dx : dx + width]
        out = view if out is None else torch.maximum(out, view)
    assert out is not None
    return out


def dilate(x: torch.Tensor, kernel_size: int = 3, footprint: Footprint = "square") -> torch.Tensor:
    """Grey-scale dilation: the max over the footprint around each pixel, outside pixels ignored.

    Args:
        x: ``(B, C, H, W)`` float or bool (each channel separately; masks are ``C = 1``).
        kernel_size: odd footprint size.
        footprint: ``"square"`` or ``"disk"`` (see :func:`make_footprint`).

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.zeros(1, 1, 3, 5); x[0, 0, 1, 2] = 1
        >>> dilate(x, 3, "disk")[0, 0]
        tensor([[0., 0., 1., 0., 0.],
                [0., 1., 1., 1., 0.],
                [0., 0., 1., 0., 0.]])
    """
    check_shape(x, "B C H W", name="x")
    make_footprint(kernel_size, footprint)
    return _restore(_dilate(_as_float(x), kernel_size, footprint), x)


def erode(x: torch.Tensor, kernel_size: int = 3, footprint: Footprint = "square") -> torch.Tensor:
    """Grey-scale erosion ``-dilate(-x)``: the min over the footprint, outside pixels ignored.

    Args:
        x: ``(B, C, H, W)`` float or bool (each channel separately).
        kernel_size: odd footprint size.
        footprint: ``"square"`` or ``"disk"``.

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.ones(1, 1, 3, 3); x[0, 0, 0, 0] = 0
        >>> erode(x)[0, 0]
        tensor([[0., 0., 1.],
                [0., 0., 1.],
                [1., 1., 1.]])
    """
    check_shape(x, "B C H W", name="x")
    make_footprint(kernel_size, footprint)
    return _restore(-_dilate(-_as_float(x), kernel_size, footprint), x)


def opening(x: torch.Tensor, kernel_size: int = 3, footprint: Footprint = "square") -> torch.Tensor:
    """Erosion then dilation: removes bright details smaller than the footprint (idempotent, anti-extensive).

    Args:
        x: ``(B, C, H, W)`` float or bool.
        kernel_size: odd footprint size.
        footprint: ``"square"`` or ``"disk"``.

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1  # a one-pixel speck
        >>> opening(x).sum().item()
        0.0
    """
    return dilate(erode(x, kernel_size, footprint), kernel_size, footprint)


def closing(x: torch.Tensor, kernel_size: int = 3, footprint: Footprint = "square") -> torch.Tensor:
    """Dilation then erosion: fills dark gaps smaller than the footprint (idempotent, extensive).

    Args:
        x: ``(B, C, H, W)`` float or bool.
        kernel_size: odd footprint size.
        footprint: ``"square"`` or ``"disk"``.

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.ones(1, 1, 5, 5); x[0, 0, 2, 2] = 0  # a one-pixel hole
        >>> closing(x).min().item()
        1.0
    """
    return erode(dilate(x, kernel_size, footprint), kernel_size, footprint)


def morphological_gradient(x: torch.Tensor, kernel_size: int = 3, footprint: Footprint = "square") -> torch.Tensor:
    """``dilate(x) - erode(x)``: an edge map (the spec's interpretation D of DASAA's mask).

    Args:
        x: ``(B, C, H, W)`` float or bool.
        kernel_size: odd footprint size.
        footprint: ``"square"`` or ``"disk"``.

    Returns:
        Float tensor of the shape of ``x``, non-negative.

    Examples:
        >>> x = torch.zeros(1, 1, 1, 4); x[..., 2:] = 1
        >>> morphological_gradient(x)[0, 0]
        tensor([[0., 1., 1., 0.]])
    """
    xf = _as_float(x)
    return dilate(xf, kernel_size, footprint) - erode(xf, kernel_size, footprint)


def _check_binary(x: torch.Tensor, what: str) -> None:
    if torch.compiler.is_exporting():  # a value-dependent check cannot be part of an exported graph
        return
    if x.dtype != torch.bool and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{what} needs a binary mask (values in {{0, 1}} or bool)")


def _component_sizes(foreground: torch.Tensor, connectivity: int) -> torch.Tensor:
    """For each foreground pixel, the size of its connected component (0 on the background).

    ``foreground``: ``(B, C, H, W)`` bool. Each pixel holds a pointer to a pixel of its component (at
    first itself). An iteration takes the smallest pointer among the neighbours, hooks the current
    pointer's target onto it (``scatter_reduce`` with ``amin``) and shortens pointer chains by pointer
    jumping; when nothing changes every component points at its smallest pixel index. This label
    equivalence scheme needs a handful of iterations even for long, winding components (plain label
    propagation needs as many as the longest geodesic path). Sizes are counted per sample and channel,
    so no component crosses samples.
    """
    b, c, h, w = foreground.shape
    n = h * w
    fg = foreground.reshape(b * c, n)
    dtype = torch.float32 if n < 2**24 else torch.float64
    inf = torch.tensor(float("inf"), device=fg.device, dtype=dtype)
    footprint: Footprint = "square" if connectivity == 2 else "disk"
    labels = torch.arange(n, device=fg.device).expand(b * c, n).contiguous()
    # An exported graph cannot test convergence: it unrolls a fixed number of iterations instead. Both loops
    # are idempotent once converged, so the result is the same whenever that number suffices.
    exporting = torch.compiler.is_exporting()
    for _ in range(EXPORT_ITERATIONS) if exporting else itertools.count():
        as_float = labels.to(dtype)
        grid = torch.where(fg, as_float, inf).reshape(b * c, 1, h, w)
        smallest = -_dilate(-grid, 3, footprint).reshape(b * c, n)
        smallest = torch.where(fg, smallest, as_float).long()
        updated = torch.minimum(labels.scatter_reduce(1, labels, smallest, reduce="amin"), smallest)
        for _ in range(2):
            updated = updated.gather(1, updated)
        if not exporting and torch.equal(updated, labels):
            break
        labels = updated
    for _ in range(EXPORT_ITERATIONS) if exporting else itertools.count():
        jumped = labels.gather(1, labels)
        if not exporting and torch.equal(jumped, labels):
            break
        labels = jumped
    counts = torch.zeros(b * c, n, device=fg.device, dtype=torch.long)
    counts.scatter_add_(1, labels, fg.long())
    return torch.where(fg, counts.gather(1, labels), 0).reshape(b, c, h, w)


def remove_small_objects(x: torch.Tensor, min_size: int, connectivity: int = 2) -> torch.Tensor:
    """Clear the foreground components with fewer than ``min_size`` pixels, per sample and channel.

    Equals ``skimage.morphology.remove_small_objects(m, min_size=min_size, connectivity=connectivity)``
    on each 2-D mask (``max_size=min_size - 1`` in scikit-image >= 0.26).

    Args:
        x: ``(B, C, H, W)`` binary (float in {0, 1} or bool).
        min_size: components smaller than this are removed.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.zeros(1, 1, 4, 6); x[0, 0, :2, :2] = 1; x[0, 0, 3, 5] = 1
        >>> remove_small_objects(x, 2)[0, 0]
        tensor([[1., 1., 0., 0., 0., 0.],
                [1., 1., 0., 0., 0., 0.],
                [0., 0., 0., 0., 0., 0.],
                [0., 0., 0., 0., 0., 0.]])
    """
    check_shape(x, "B C H W", name="x")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    _check_binary(x, "remove_small_objects")
    foreground = x.bool()
    if min_size <= 1:
        return x.clone()
    keep = foreground & (_component_sizes(foreground, connectivity) >= min_size)
    return keep if x.dtype == torch.bool else keep.to(x.dtype)


def remove_small_holes(x: torch.Tensor, min_size: int, connectivity: int = 2) -> torch.Tensor:
    """Fill the background components (holes, border-touching ones included) with fewer than
    ``min_size`` pixels: ``~remove_small_objects(~x)``, as ``skimage.morphology.remove_small_holes``.

    Args:
        x: ``(B, C, H, W)`` binary (float in {0, 1} or bool).
        min_size: holes smaller than this are filled.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours) of the holes.

    Returns:
        Same shape and dtype as ``x``.

    Examples:
        >>> x = torch.ones(1, 1, 4, 4); x[0, 0, 1, 1] = 0
        >>> bool(remove_small_holes(x, 2).all())
        True
    """
    check_shape(x, "B C H W", name="x")
    _check_binary(x, "remove_small_holes")
    filled = ~remove_small_objects(~x.bool(), min_size, connectivity)
    return filled if x.dtype == torch.bool else filled.to(x.dtype)


def _skimage_size_filter(
    function: Callable[..., np.ndarray], mask: np.ndarray, min_size: int, connectivity: int
) -> np.ndarray:
    """Call scikit-image's ``remove_small_objects`` / ``remove_small_holes`` with "smaller than
    ``min_size``" semantics across versions (0.26 renamed the exclusive ``min_size`` /
    ``area_threshold`` to the inclusive ``max_size``)."""
    import inspect

    if "max_size" in inspect.signature(function).parameters:
        return function(mask, max_size=min_size - 1, connectivity=connectivity)
    return function(mask, min_size, connectivity)


def _skimage_operation(operation: str, image: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """scikit-image's morphology with outside pixels ignored; binary images stay binary (the
    footprints here are symmetric, so mirroring conventions do not matter)."""
    from skimage import morphology

    grey = image.astype(np.float64)

    def dilation(a: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, morphology.dilation(a, footprint, mode="ignore"))

    def erosion(a: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, morphology.erosion(a, footprint, mode="ignore"))

    result: np.ndarray = {  # type: ignore[no-untyped-call]
        "dilate": lambda: dilation(grey),
        "erode": lambda: erosion(grey),
        "open": lambda: dilation(erosion(grey)),
        "close": lambda: erosion(dilation(grey)),
        "gradient": lambda: dilation(grey) - erosion(grey),
    }[operation]()
    return result.astype(bool) if image.dtype == bool and operation != "gradient" else result


_TORCH_OPS = {"dilate": dilate, "erode": erode, "open": opening, "close": closing, "gradient": morphological_gradient}


class MorphologicalMask(nn.Module):
    """Clean a mask with morphology: optional small-object / small-hole removal, then one operation.

    The pipeline, per sample and channel (masks are ``(B, 1, H, W)``):

    1. ``invert``: work on ``1 - mask`` (PASSRnet cleans the *occlusion* mask ``1 - valid``);
    2. ``min_object_size``: remove foreground components smaller than this (binary masks only);
    3. ``min_hole_size``: fill background components smaller than this (binary masks only);
    4. ``operation`` with the footprint, on the mask zero-padded by ``padding`` pixels (cropped back after);
    5. undo the inversion.

    Connected components use ``connectivity`` (2: 8-neighbours, as PASSRnet). Everything runs on tensors
    without gradients being meaningful for the size filters (their output is piecewise constant); grey
    ``dilate``/``erode``/``open``/``close`` pass gradients like max-pooling does. :meth:`passrnet` builds the
    exact PASSRnet clean-up. ``backend="skimage"`` runs the same pipeline with scikit-image on the CPU, one
    2-D mask at a time (the official code labels the whole 4-D batch, so components can join across
    samples; that bug is not reproduced).

    Border handling: see the module docstring (outside pixels ignored; ``padding`` adds zeros instead).

    Args:
        kernel_size: odd footprint size (``disk`` radius is ``kernel_size // 2``).
        operation: ``"dilate"``, ``"erode"``, ``"open"``, ``"close"``, ``"gradient"`` or ``"none"``.
        footprint: ``"square"`` or ``"disk"``.
        padding: zero padding added before the operation and cropped after.
        min_object_size: if > 0, step 2 with this size.
        min_hole_size: if > 0, step 3 with this size.
        connectivity: 1 or 2, for steps 2 and 3.
        invert: steps 1 and 5.
        backend: ``"torch"`` or ``"skimage"`` (exact reference; binary masks use ``binary_*``).

    Shape:
        - Input: ``(B, C, H, W)``, usually ``C = 1``; float or bool
        - Output: same shape and dtype

    Examples:
        >>> mask = torch.ones(1, 1, 8, 8); mask[0, 0, 3, 3] = 0  # a one-pixel hole
        >>> torch.equal(MorphologicalMask(3, "close")(mask), torch.ones(1, 1, 8, 8))
        True
        >>> clean = MorphologicalMask.passrnet()
        >>> clean(mask).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(
        self,
        kernel_size: int = 3,
        operation: Operation = "close",
        footprint: Footprint = "square",
        padding: int = 0,
        min_object_size: int = 0,
        min_hole_size: int = 0,
        connectivity: int = 2,
        invert: bool = False,
        backend: Literal["torch", "skimage"] = "torch",
    ) -> None:
        super().__init__()
        make_footprint(kernel_size, footprint)
        if operation not in _OPERATIONS:
            raise ValueError(f"operation must be one of {_OPERATIONS}, got {operation!r}")
        if connectivity not in (1, 2):
            raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
        if backend not in ("torch", "skimage"):
            raise ValueError(f"backend must be 'torch' or 'skimage', got {backend!r}")
        if padding < 0 or min_object_size < 0 or min_hole_size < 0:
            raise ValueError("padding, min_object_size and min_hole_size must be >= 0")
        self.kernel_size = kernel_size
        self.operation = operation
        self.footprint = footprint
        self.padding = padding
        self.min_object_size = min_object_size
        self.min_hole_size = min_hole_size
        self.connectivity = connectivity
        self.invert = invert
        self.backend = backend

    @classmethod
    def passrnet(cls, backend: Literal["torch", "skimage"] = "torch") -> MorphologicalMask:
        """PASSRnet's ``morphologic_process``: on the occlusion mask ``1 - valid``, remove objects smaller
        than 20 px and holes smaller than 10 px (8-connectivity), zero-pad by 3, binary closing with
        ``disk(3)``, crop, invert back.

        "Smaller than" is strict, as in the scikit-image PASSRnet was written for. scikit-image >= 0.26
        maps the official positional ``remove_small_objects(mask, 20, 2)`` onto its new inclusive
        ``max_size`` and so also removes 20 px objects (and fills 10 px holes) when the official code runs
        there."""
        return cls(
            kernel_size=7,
            operation="close",
            footprint="disk",
            padding=3,
            min_object_size=20,
            min_hole_size=10,
            connectivity=2,
            invert=True,
            backend=backend,
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        check_shape(mask, "B C H W", name="mask")
        if self.backend == "skimage":
            return self._forward_skimage(mask)
        x = mask
        if self.invert:
            x = ~x if x.dtype == torch.bool else 1 - x
        if self.min_object_size > 0:
            x = remove_small_objects(x, self.min_object_size, self.connectivity)
        if self.min_hole_size > 0:
            x = remove_small_holes(x, self.min_hole_size, self.connectivity)
        if self.operation != "none":
            p = self.padding
            padded = F.pad(x.float(), (p, p, p, p)).to(x.dtype) if p else x
            out = _TORCH_OPS[self.operation](padded, self.kernel_size, self.footprint)
            x = out[..., p : out.shape[-2] - p, p : out.shape[-1] - p] if p else out
        if self.invert:
            x = ~x if x.dtype == torch.bool else 1 - x
        return x

    def _forward_skimage(self, mask: torch.Tensor) -> torch.Tensor:
        from skimage import morphology

        binary = mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())
        if (self.min_object_size or self.min_hole_size) and not binary:
            raise ValueError("min_object_size / min_hole_size need a binary mask (values in {0, 1} or bool)")
        fp = make_footprint(self.kernel_size, self.footprint).numpy()
        array = mask.detach().cpu().numpy()
        out = np.empty(array.shape, dtype=np.float64)
        p = self.padding
        for index in np.ndindex(*array.shape[:2]):
            m = array[index].astype(bool) if binary else array[index].astype(np.float64)
            if self.invert:
                m = ~m if binary else 1 - m
            if self.min_object_size > 0:
                m = _skimage_size_filter(morphology.remove_small_objects, m, self.min_object_size, self.connectivity)
            if self.min_hole_size > 0:
                m = _skimage_size_filter(morphology.remove_small_holes, m, self.min_hole_size, self.connectivity)
            if self.operation != "none":
                padded = np.pad(m, p) if p else m
                res = _skimage_operation(self.operation, padded, fp)
                m = res[p : res.shape[0] - p, p : res.shape[1] - p] if p else res
            if self.invert:
                m = ~m if m.dtype == bool else 1 - m
            out[index] = m
        return torch.from_numpy(out).to(device=mask.device, dtype=mask.dtype)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, operation={self.operation!r}, footprint={self.footprint!r}, "
            f"padding={self.padding}, min_object_size={self.min_object_size}, min_hole_size={self.min_hole_size}, "
            f"connectivity={self.connectivity}, invert={self.invert}, backend={self.backend!r}"
        )
