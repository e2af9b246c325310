"""The memory budget of ``run``: estimate a model's peak memory for a frame size and pick tiles that fit.

Every attention block of the reference models is linear in the pixels in inference (fused or blockwise
kernels), so one forward pass of ``B`` windows of ``T`` frames of ``H x W`` LR pixels needs about
``fixed + per_pixel * H * W`` bytes. :func:`estimate_memory` measures both coefficients on the model itself:
two small probe passes on random frames of the run's batch, frame count, device and dtype, counting the
bytes of all tensors alive at once (:class:`LiveTensorBytes`). :func:`choose_tile` then picks the largest
square tile whose estimate, times :data:`SAFETY_FACTOR` for what tensors do not show (allocator slack,
kernel scratch buffers, the blended output), stays within the budget.

The budget (``run --max-memory``, :func:`parse_size`) is the memory the forward passes may take on top of
what is in use when ``run`` starts (Python, the loaded model); the default (:func:`default_budget`) is half
of the memory available then: ``MemAvailable`` of ``/proc/meminfo`` on the CPU, free CUDA memory on a GPU.
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "LiveTensorBytes",
    "MemoryEstimate",
    "estimate_memory",
    "choose_tile",
    "parse_size",
    "format_size",
    "default_budget",
    "automatic_tile",
    "SAFETY_FACTOR",
]

# Measured peak resident memory over the tensor bytes counted by LiveTensorBytes, DASAA and MAFnet tiny and
# paper, 64x64 to 120x90 LR: at most 1.3 (the benchmark table in benchmarks/memory.py); 1.5 leaves room.
SAFETY_FACTOR = 1.5
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages that operations create while the mode is active, as long as
    they are alive: :attr:`peak` is the most held at once, :attr:`largest` the largest single storage.

    Storages shared by views are counted once; inputs made before the mode are not counted. Scratch memory
    inside a kernel (e.g. the blocks of a fused attention kernel) is invisible.

    Examples:
        >>> with LiveTensorBytes() as live:
        ...     a = torch.zeros(1000)  # 4000 bytes
        ...     b = a + 1  # 4000 more
        ...     del a
        ...     c = b * 2
        >>> live.peak, live.largest
        (8000, 4000)
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}
        self.now = 0
        self.peak = 0
        self.largest = 0

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in self._live:
                self._live[key][1] += 1
            else:
                size = storage.nbytes()
                self._live[key] = [size, 1]
                self.now += size
                self.peak = max(self.peak, self.now)
                self.largest = max(self.largest, size)
            weakref.finalize(tensor, self._release, key)
        return out


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak tensor bytes of one forward pass as ``fixed + per_pixel * H * W`` (``H x W`` LR pixels)."""

    fixed: float
    per_pixel: float

    def peak(self, height: int, width: int) -> float:
        """Estimated peak bytes, :data:`SAFETY_FACTOR` included, of a pass on ``height x width`` LR frames."""
        return SAFETY_FACTOR * (self.fixed + self.per_pixel * height * width)


def _probe(model: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> int:
    clip = torch.rand(shape, device=device).to(dtype)
    with torch.no_grad(), LiveTensorBytes() as live:
        model(clip)
    reset = getattr(model, "reset_state", None)
    if callable(reset):
        reset()  # a stateful model must not carry the probe's state into the real frames
    return live.peak


def _probe_sizes(model: nn.Module) -> tuple[int, int]:
    small = max(32, getattr(model, "tile_size", None) or 0)
    return small, small + small // 2


def estimate_memory(model: nn.Module, batch: int = 1, probe_sizes: tuple[int, int] | None = None) -> MemoryEstimate:
    """Measure :class:`MemoryEstimate` of ``model`` (eval mode, with ``num_frames``) on ``batch`` windows.

    Two probe passes on random square frames of ``probe_sizes`` LR pixels (default 32 and 48, or the
    model's own ``tile_size`` and 1.5 times it) give the two coefficients; the model's device and dtype
    are used.

    Examples:
        >>> from reference_models.registry import create_model
        >>> est = estimate_memory(create_model("dasaa", "tiny").eval())
        >>> est.peak(90, 120) < est.peak(180, 240)
        True
    """
    first = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    small, large = _probe_sizes(model) if probe_sizes is None else probe_sizes
    if not 0 < small < large:
        raise ValueError(f"probe_sizes must be increasing and positive, got {probe_sizes}")
    frames = int(cast(int, model.num_frames))
    peaks = [_probe(model, (batch, frames, 3, s, s), device, dtype) for s in (small, large)]
    per_pixel = max(0.0, (peaks[1] - peaks[0]) / (large**2 - small**2))
    return MemoryEstimate(fixed=max(0.0, peaks[0] - per_pixel * small**2), per_pixel=per_pixel)


def choose_tile(
    estimate: MemoryEstimate, height: int, width: int, budget: float, tile_overlap: int = 16, minimum: int = 1
) -> int | None:
    """The largest square tile side whose :meth:`MemoryEstimate.peak` fits ``budget`` bytes, or ``None`` when
    the whole ``height x width`` frame fits.

    Raises:
        ValueError: when not even a tile of ``max(minimum, tile_overlap + 1)`` pixels fits.

    Examples:
        >>> est = MemoryEstimate(fixed=0.0, per_pixel=1000.0)
        >>> choose_tile(est, 90, 120, budget=2**30) is None
        True
        >>> choose_tile(est, 480, 640, budget=2**28)
        423
    """
    if estimate.peak(height, width) <= budget:
        return None
    smallest = max(minimum, tile_overlap + 1)
    if estimate.peak(min(smallest, height), min(smallest, width)) > budget:
        raise ValueError(
            f"the memory budget {format_size(budget)} is too small: a {smallest}x{smallest} tile needs about "
            f"{format_size(estimate.peak(smallest, smallest))}; raise --max-memory"
        )
    low, high = smallest, max(height, width)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate.peak(min(middle, height), min(middle, width)) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def parse_size(text: str) -> int:
    """Bytes of a size such as ``"4G"``, ``"512M"``, ``"1.5GiB"`` or ``"1000000"`` (binary units).

    Examples:
        >>> parse_size("4G"), parse_size("512MiB"), parse_size("1.5g")
        (4294967296, 536870912, 1610612736)
    """
    match = _SIZE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a positive size such as 4G, 512M or 1.5GiB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps it >= 1, e.g. ``"1.5 GiB"``.

    Examples:
        >>> format_size(1.5 * 2**30), format_size(300)
        ('1.5 GiB', '300 B')
    """
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.3g} {unit}iB"
    return f"{size:.0f} B"


def _available_cpu_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget(device: torch.device | str = "cpu", fraction: float = 0.5) -> int | None:
    """``fraction`` of the memory available now: free CUDA memory of ``device``, else the system's available
    RAM; ``None`` where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(fraction * free)
    available = _available_cpu_bytes()
    return None if available is None else int(fraction * available)


def automatic_tile(
    model: nn.Module,
    height: int,
    width: int,
    batch: int = 1,
    max_memory: str | None = None,
    tile_overlap: int = 16,
    minimum: int = 1,
) -> int | None:
    """What ``run`` does without ``--tile``: the tile side that keeps ``batch`` windows of ``height x width``
    frames within ``max_memory`` (:func:`parse_size`; ``None``: :func:`default_budget`), or ``None`` when whole
    frames fit; the tile is at least ``minimum`` (what the model needs, see
    :func:`reference_models.inference.upscale.minimum_tile`). Choosing tiles issues one warning that says so. Under the
    default budget, frames no larger
    than :func:`estimate_memory`'s probes run whole without probing (the probes would cost as much).

    Raises:
        ValueError: for a malformed size, or a budget too small for the smallest tile.
    """
    first = next((t for t in model.parameters() if t.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    budget = parse_size(max_memory) if max_memory is not None else default_budget(device)
    if budget is None or (max_memory is None and height * width <= _probe_sizes(model)[1] ** 2):
        return None
    estimate = estimate_memory(model, batch)
    tile = choose_tile(estimate, height, width, budget, tile_overlap, minimum=minimum)
    if tile is not None:
        warnings.warn(
            f"{width}x{height} frames would need about {format_size(estimate.peak(height, width))}, over the "
            f"memory budget of {format_size(budget)} (--max-memory): running {tile}x{tile} tiles (--tile)",
            stacklevel=2,
        )
    return tile
