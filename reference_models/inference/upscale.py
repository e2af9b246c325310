"""Super-resolving whole clips of any length and frame size with a reference model.

A reference model sees a fixed number of frames (``model.num_frames``) and either returns the centre
frame (``output_mode == "center"``: MANA, DASAA) or every frame (``"all"``: VSRT, MAFnet). This module runs
such a model over a clip of any length:

- **centre-frame models** slide a window over the clip, one output per input frame; at the ends the window
  is reflection-padded (frame ``-k`` is frame ``k``, frame ``T-1+k`` is frame ``T-1-k``), BasicSR's test
  convention (``generate_frame_indices(..., padding="reflection")``);
- **clip models** run windows that start every ``clip_stride`` frames (the last one ends at the last
  frame) and keep, for every frame, the output of the window whose centre is nearest (ties: the earlier
  window), so each kept frame has as much temporal context on both sides as the windows allow. A clip
  shorter than the window is reflection-padded.

``tile`` additionally cuts frames into overlapping ``tile x tile`` spatial tiles, each run on its own; the
outputs are blended with weights that are zero on the outer quarter of the overlap next to a cut, rise
along a raised cosine across the middle half and sum to one. A model whose receptive field reaches at
most ``tile_overlap // 4`` LR pixels gives exactly the untiled result; for the others (global attention)
tiling is an approximation that bounds memory.

Frames stream through: at most one window (plus ``batch - 1`` more) of LR frames is held at a time.

**Recurrent models** (BasicVSR, IconVSR, BasicVSR++: a ``stream`` method) run the whole input as one
sequence by default, exactly as their whole-clip forward would, in bounded memory: per-frame features
beyond ``max_bytes`` spill to disk (:mod:`reference_models.inference.streaming`). ``max_seq_len`` instead
runs segments of that many frames overlapping by ``seq_overlap`` (the clip-model windows above): faster and
lighter, but an approximation (less temporal context near the cuts). Spatial tiles apply to segments (and,
in :func:`upscale_clip`, to the whole clip run in memory as one segment): whole-sequence streaming
propagates features across the whole frame and never cuts it.

``precision="bfloat16"`` (or ``"auto"`` on hardware that multiplies bfloat16 fast) runs the model's
convolutions and matrix products in bfloat16 and keeps flows, warping, norms, attention statistics and the
bilinear skip in float32 (:mod:`reference_models.inference.precision`); the outputs are float32 either way.
Whole-sequence streaming of recurrent models then also stores its features in bfloat16 (half the memory).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Iterator
from typing import Any, cast

import torch
from torch import nn

from reference_models.inference.precision import (
    low_precision_weights,
    mixed_dtype,
    mixed_precision,
    model_device_dtype,
)
from vsrblocks.shapes import check_shape

__all__ = [
    "upscale_clip",
    "upscale_frames",
    "reflect_index",
    "center_window",
    "clip_windows",
    "tile_spans",
    "forward_tiled",
    "minimum_tile",
]


def reflect_index(i: int, length: int) -> int:
    """Index ``i`` reflected into ``[0, length)`` without repeating the edge frame (``-1 -> 1``).

    Examples:
        >>> [reflect_index(i, 5) for i in range(-3, 8)]
        [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if length == 1:
        return 0
    period = 2 * (length - 1)
    i %= period
    return i if i < length else period - i


def center_window(i: int, length: int, num_frames: int) -> list[int]:
    """Frame indices of the window whose centre (``num_frames // 2``) is frame ``i`` of a clip of ``length``.

    Examples:
        >>> center_window(0, 10, 5), center_window(9, 10, 5)
        ([2, 1, 0, 1, 2], [7, 8, 9, 8, 7])
    """
    start = i - num_frames // 2
    return [reflect_index(j, length) for j in range(start, start + num_frames)]


def clip_windows(length: int, num_frames: int, stride: int | None = None) -> list[tuple[list[int], int, int]]:
    """The windows a clip model runs on: ``(frame indices, first kept frame, end of kept frames)``.

    Each window's outputs for frames ``first <= t < end`` are kept; the kept ranges tile ``[0, length)``.

    Examples:
        >>> [(w[0], w[-1], lo, hi) for w, lo, hi in clip_windows(10, 5, stride=3)]
        [(0, 4, 0, 4), (3, 7, 4, 7), (5, 9, 7, 10)]
    """
    return list(_clip_plan(_KnownLength(length), num_frames, _stride(num_frames, stride)))


def tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` of tiles of ``tile`` pixels overlapping by at least ``overlap`` that cover ``size``.

    Examples:
        >>> tile_spans(100, 48, 16)
        [(0, 48), (32, 80), (52, 100)]
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile={tile}), got {overlap}")
    if size <= tile:
        return [(0, size)]
    starts = list(range(0, size - tile, tile - overlap)) + [size - tile]
    return [(s, s + tile) for s in starts]


def _blend_weights(start: int, end: int, size: int, overlap: int, scale: int) -> torch.Tensor:
    """HR weights along one axis of the tile ``[start, end)`` of ``size`` LR pixels (module docstring)."""
    n = scale * (end - start)
    weights = torch.ones(n, dtype=torch.float64)
    if overlap == 0:
        return weights
    margin = overlap // 4
    width = overlap - 2 * margin
    position = (torch.arange(n, dtype=torch.float64) + 0.5) / scale  # LR distance from the tile start

    def ramp(distance: torch.Tensor) -> torch.Tensor:
        return 0.5 - 0.5 * torch.cos(math.pi * ((distance - margin) / width).clamp(0, 1))

    if start > 0:
        weights *= ramp(position)
    if end < size:
        weights *= ramp((end - start) - position)
    return weights


def _model_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def forward_tiled(model: nn.Module, clip: torch.Tensor, tile: int, tile_overlap: int = 16) -> torch.Tensor:
    """``model(clip)`` computed on overlapping spatial tiles of at most ``tile x tile`` LR pixels, blended
    (module docstring). Returns float32.

    Shape:
        - clip: ``(B, T, C, H, W)``
        - Output: the model's output for the whole frame, ``(..., scale * H, scale * W)``
    """
    dims = check_shape(clip, "B T C H W", name="clip")
    height, width, scale = dims["H"], dims["W"], int(cast(int, model.scale))
    rows, cols = tile_spans(height, tile, tile_overlap), tile_spans(width, tile, tile_overlap)
    out: torch.Tensor | None = None
    total: torch.Tensor | None = None
    for y0, y1 in rows:
        wy = _blend_weights(y0, y1, height, tile_overlap, scale)
        for x0, x1 in cols:
            wx = _blend_weights(x0, x1, width, tile_overlap, scale)
            part = _model_output(model, clip[..., y0:y1, x0:x1]).float()
            weight = (wy[:, None] * wx[None, :]).to(part)
            if out is None or total is None:
                out = part.new_zeros(*part.shape[:-2], scale * height, scale * width)
                total = part.new_zeros(scale * height, scale * width)
            region = (..., slice(scale * y0, scale * y1), slice(scale * x0, scale * x1))
            out[region] += part * weight
            total[region[1:]] += weight
    assert out is not None and total is not None  # tile_spans gives at least one row and one column
    return out / total


def minimum_tile(model: nn.Module) -> int:
    """The smallest tile side (LR pixels) that every part of ``model`` can work on as designed.

    The largest of: a tile size the model runs itself (``tile_size``, VSRT's positional encoding), the patch
    side of patch attention (``patch_size``, VSRT's STCSA) and the side that leaves the coarsest level of an
    image pyramid one pixel wide (``2 ** (num_levels - 1)``: PCD alignment, MAFnet's flow estimator; not
    SPyNet, which resizes its input to a multiple of 32 itself); 1 for a model with none of these.

    Examples:
        >>> from reference_models import create_model
        >>> minimum_tile(create_model("vsrt", "tiny")), minimum_tile(create_model("mafnet", "tiny"))
        (4, 4)
    """
    from vsrblocks.align.spynet import SPyNet

    need = 1
    for module in model.modules():
        sizes: tuple[object, ...] = (getattr(module, "tile_size", None), getattr(module, "patch_size", None))
        levels = getattr(module, "num_levels", None)
        if isinstance(levels, int) and not isinstance(module, SPyNet):
            sizes += (2 ** (levels - 1),)
        need = max([need, *(int(s) for s in sizes if isinstance(s, int))])
    return need


class _Frames:
    """Frames read on demand from an iterator, kept on the model's device until dropped."""

    def __init__(self, frames: Iterable[torch.Tensor], device: torch.device, dtype: torch.dtype) -> None:
        self.iterator = iter(frames)
        self.device, self.dtype = device, dtype
        self.cache: dict[int, torch.Tensor] = {}
        self.read = 0
        self.length: int | None = None
        self.shape: tuple[int, ...] | None = None

    def has(self, i: int) -> bool:
        """Whether frame ``i`` exists (reading up to it); sets :attr:`length` when the clip ends first."""
        while self.length is None and self.read <= i:
            try:
                frame = next(self.iterator)
            except StopIteration:
                self.length = self.read
                break
            self.cache[self.read] = self._prepare(frame)
            self.read += 1
        return i < self.read

    def _prepare(self, frame: torch.Tensor) -> torch.Tensor:
        check_shape(frame, "C H W", name=f"frame {self.read}", C=3)
        if self.shape is not None and tuple(frame.shape) != self.shape:
            raise ValueError(f"frame {self.read} is {tuple(frame.shape)}, the first frame was {self.shape}")
        self.shape = tuple(frame.shape)
        frame = frame.to(self.device)
        if frame.dtype == torch.uint8:
            frame = frame.float() / 255.0
        return frame.to(self.dtype)

    def window(self, indices: list[int]) -> torch.Tensor:
        return torch.stack([self.cache[i] for i in indices])

    def drop_before(self, i: int) -> None:
        for k in [k for k in self.cache if k < i]:
            del self.cache[k]


class _KnownLength:
    """Stands in for :class:`_Frames` where only the clip length matters (planning, tests)."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"a clip needs at least one frame, got {length}")
        self.length = length

    def has(self, i: int) -> bool:
        return i < self.length


def _stride(num_frames: int, stride: int | None) -> int:
    stride = (num_frames + 1) // 2 if stride is None else stride
    if not 1 <= stride <= num_frames:
        raise ValueError(f"clip_stride must be in [1, num_frames={num_frames}], got {stride}")
    return stride


def _clip_plan(
    frames: _Frames | _KnownLength, num_frames: int, stride: int, pad: bool = True
) -> Iterator[tuple[list[int], int, int]]:
    """Lazily: (indices, first kept, end kept) of each clip-model window; reads one window ahead. A clip
    shorter than the window is reflection-padded to it, or (``pad=False``: models of any length) run as it is."""
    if not frames.has(num_frames - 1):
        length = frames.length
        if not length:
            return
        yield [reflect_index(j, length) for j in range(num_frames if pad else length)], 0, length
        return
    centre = (num_frames - 1) / 2
    start, kept_from = 0, 0
    while True:
        following: int | None = start + stride
        if not frames.has(start + stride + num_frames - 1):
            last = cast(int, frames.length) - num_frames  # known once a frame is missing
            following = last if last > start else None
        if following is None:
            yield list(range(start, start + num_frames)), kept_from, cast(int, frames.length)
            return
        kept_to = math.floor((start + following) / 2 + centre) + 1
        yield list(range(start, start + num_frames)), kept_from, kept_to
        start, kept_from = following, kept_to


def _model_attributes(model: nn.Module) -> tuple[int, int, str]:
    try:
        num_frames, scale, mode = int(cast(int, model.num_frames)), int(cast(int, model.scale)), str(model.output_mode)
    except AttributeError as exc:
        raise ValueError(
            f"{type(model).__name__} lacks the reference-model attributes num_frames, scale and output_mode"
        ) from exc
    if mode not in ("center", "all"):
        raise ValueError(f"output_mode must be 'center' or 'all', got {mode!r}")
    return num_frames, scale, mode


def upscale_frames(
    model: nn.Module,
    frames: Iterable[torch.Tensor],
    *,
    tile: int | None = None,
    tile_overlap: int = 16,
    batch: int = 1,
    clip_stride: int | None = None,
    skip: Container[int] = (),
    max_seq_len: int | None = None,
    seq_overlap: int | None = None,
    max_bytes: int | None = None,
    precision: str = "float32",
    **stream_options: Any,
) -> Iterator[torch.Tensor | None]:
    """Super-resolve a stream of frames, yielding one SR frame per input frame, in order.

    Frames are read lazily and moved to the model's device and dtype; at most ``num_frames + batch``
    (centre models) or ``batch`` windows plus one window of look-ahead (clip models) are held. Put the model
    in eval mode first; this function does not change it.

    Args:
        model: a reference model (attributes ``num_frames``, ``scale``, ``output_mode``).
        frames: ``(3, H, W)`` tensors, float in [0, 1] or uint8 in [0, 255], all the same size.
        tile: run spatial tiles of at most ``tile x tile`` LR pixels (``None``: whole frames).
        tile_overlap: overlap of neighbouring tiles in LR pixels.
        batch: windows per forward pass.
        clip_stride: frames between the starts of consecutive windows of a clip model
            (default ``(num_frames + 1) // 2``).
        skip: indices of frames whose output is not needed (a resumed run): ``None`` is yielded for them,
            and windows whose kept outputs are all skipped are not run. The other outputs are unchanged.
        max_seq_len: recurrent models: run segments of at most this many frames (approximate) instead of the
            whole input as one sequence.
        seq_overlap: frames shared by consecutive segments (default ``max_seq_len // 4``).
        max_bytes: recurrent models, whole sequence: memory budget of the stored features, beyond which they
            spill to disk (``None``: all in memory).
        precision: ``"float32"`` (the model as it is), ``"bfloat16"`` (mixed precision: convolutions and
            matrix products in bfloat16, float32 islands; the model must be float32, and its weights are held in
            bfloat16 while the generator runs) or ``"auto"`` (bfloat16 on CPUs with AMX or AVX-512 BF16 and on
            CUDA devices with bfloat16, else float32); see
            :func:`~reference_models.inference.precision.compute_dtype`. Whole-sequence streaming of a recurrent
            model takes it too (its stored features are then bfloat16: half the memory and spill).
        stream_options: recurrent models, whole sequence: more options of
            :func:`~reference_models.inference.streaming.stream_upscale` (``spill_dir``, ``pinned_bytes``,
            ``report``, ``length``, ``channels_last``).

    Yields:
        ``(3, scale * H, scale * W)`` float32 tensors on the model's device, not clamped (``None`` for
        frames in ``skip``).
    """
    from reference_models.inference.streaming import is_recurrent, stream_frames

    recurrent = is_recurrent(model)
    if recurrent and max_seq_len is None:
        if tile is not None:
            raise ValueError(
                "whole-sequence streaming does not cut frames into tiles (propagation carries features across the "
                "whole frame); give max_seq_len to run tiled segments (approximate)"
            )
        yield from stream_frames(model, frames, skip=skip, max_bytes=max_bytes, precision=precision, **stream_options)
        return
    if stream_options:
        raise TypeError(f"upscale_frames: {', '.join(stream_options)} apply to whole-sequence streaming only")
    num_frames, scale, mode = _model_attributes(model)
    mixed = mixed_dtype(model, precision)
    if max_seq_len is not None:
        if not recurrent:
            raise ValueError(
                f"max_seq_len applies to recurrent models; {type(model).__name__} sees {num_frames} frames"
            )
        overlap = max_seq_len // 4 if seq_overlap is None else seq_overlap
        if not 0 <= overlap < max_seq_len:
            raise ValueError(f"seq_overlap must be in [0, max_seq_len={max_seq_len}), got {overlap}")
        num_frames, clip_stride = max_seq_len, max_seq_len - overlap
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if tile is not None:
        tile_spans(tile, tile, tile_overlap)  # validates tile and overlap before any work
        own_tile = getattr(model, "tile_size", None)
        if own_tile is not None and tile < own_tile:
            raise ValueError(
                f"{type(model).__name__} runs {own_tile}x{own_tile} tiles itself; tile must be >= {own_tile}"
            )
        if tile < minimum_tile(model):
            raise ValueError(
                f"{type(model).__name__} needs tiles of at least {minimum_tile(model)} LR pixels (its patch "
                f"attention or image pyramid); tile must be >= {minimum_tile(model)}, got {tile}"
            )
    stride = _stride(num_frames, clip_stride) if mode == "all" else 1
    buffer = _Frames(frames, *model_device_dtype(model))  # float32 frames also in bfloat16: the skip stays exact
    with low_precision_weights(model, mixed):
        yield from _windows(
            model, buffer, num_frames, scale, mode, stride, tile, tile_overlap, batch, skip, mixed, recurrent
        )


def _windows(
    model: nn.Module,
    buffer: _Frames,
    num_frames: int,
    scale: int,
    mode: str,
    stride: int,
    tile: int | None,
    tile_overlap: int,
    batch: int,
    skip: Container[int],
    dtype: torch.dtype,
    recurrent: bool,
) -> Iterator[torch.Tensor | None]:
    """The windows of :func:`upscale_frames`, after its checks."""

    def run(windows: list[list[int]]) -> torch.Tensor:
        clip = torch.stack([buffer.window(indices) for indices in windows])
        with torch.no_grad(), mixed_precision(model, dtype):
            if tile is not None and max(clip.shape[-2:]) > tile:
                out = forward_tiled(model, clip, tile, tile_overlap)
            else:
                out = _model_output(model, clip).float()
        b, t, _, h, w = clip.shape
        expected = (b, 3, scale * h, scale * w) if mode == "center" else (b, t, 3, scale * h, scale * w)
        if tuple(out.shape) != expected:
            raise ValueError(
                f"{type(model).__name__} (output_mode={mode!r}, scale={scale}) returned {tuple(out.shape)} "
                f"for a {tuple(clip.shape)} clip; expected {expected}"
            )
        return out

    if mode == "center":
        before = num_frames // 2
        ahead = max(num_frames - 1 - before, before)
        pending: list[list[int]] = []
        order: list[int | None] = []  # per frame: its window's place in `pending`, None if skipped
        i = 0
        while buffer.has(i):
            buffer.has(i + ahead)  # read ahead, so that the clip's end is known when the window reaches it
            length = buffer.length if buffer.length is not None else i + ahead + 1
            if i in skip:
                order.append(None)
            else:
                order.append(len(pending))
                pending.append(center_window(i, length, num_frames))
            i += 1
            # Skipped frames flush at once, so that a long skipped stretch holds no frames in memory.
            if len(pending) in (0, batch) or not buffer.has(i):
                out: torch.Tensor | list[torch.Tensor] = run(pending) if pending else []
                yield from (None if k is None else out[k] for k in order)
                pending, order = [], []
                buffer.drop_before(i - before)
        return

    group: list[tuple[list[int], int, int]] = []
    for step in _clip_plan(buffer, num_frames, stride, pad=not recurrent):
        indices, kept_from, kept_to = step
        if all(t in skip for t in range(kept_from, kept_to)):
            if group:
                yield from _kept(run([g[0] for g in group]), group, skip)
                group = []
            yield from (None for _ in range(kept_from, kept_to))
            buffer.drop_before(indices[0] + 1)
            continue
        group.append(step)
        if len(group) < batch:
            continue
        yield from _kept(run([g[0] for g in group]), group, skip)
        buffer.drop_before(group[-1][0][0] + 1)  # the next window starts later
        group = []
    if group:
        yield from _kept(run([g[0] for g in group]), group, skip)


def _kept(
    out: torch.Tensor, group: list[tuple[list[int], int, int]], skip: Container[int]
) -> Iterator[torch.Tensor | None]:
    for window_out, (indices, kept_from, kept_to) in zip(out, group):
        for t in range(kept_from, kept_to):
            yield None if t in skip else window_out[t - indices[0]]


def upscale_clip(
    model: nn.Module,
    clip: torch.Tensor,
    *,
    tile: int | None = None,
    tile_overlap: int = 16,
    batch: int = 1,
    clip_stride: int | None = None,
    progress: bool = False,
    max_seq_len: int | None = None,
    seq_overlap: int | None = None,
    max_bytes: int | None = None,
    spill_dir: str | None = None,
    precision: str = "float32",
) -> torch.Tensor:
    """Super-resolve every frame of ``clip`` (any length, any size) with ``model``; see :func:`upscale_frames`.

    Args:
        model: a reference model in eval mode.
        clip: frames in [0, 1] (float) or [0, 255] (uint8).
        tile: as for :func:`upscale_frames`.
        tile_overlap: as for :func:`upscale_frames`.
        batch: as for :func:`upscale_frames`.
        clip_stride: as for :func:`upscale_frames`.
        progress: show a tqdm progress bar.
        max_seq_len: recurrent models, as for :func:`upscale_frames`: by default the whole clip is one
            sequence, its features spilled to disk beyond ``max_bytes``; with ``tile`` (and no ``max_seq_len``)
            each tile runs the whole clip as one sequence, in memory.
        seq_overlap: as for :func:`upscale_frames`.
        max_bytes: as for :func:`upscale_frames`.
        spill_dir: parent of the spill folder (default: the system's temporary folder).
        precision: as for :func:`upscale_frames`.

    Shape:
        - clip: ``(T, 3, H, W)`` or ``(B, T, 3, H, W)``
        - Output: ``(T, 3, sH, sW)`` or ``(B, T, 3, sH, sW)``, float32 on the model's device, not clamped

    Examples:
        >>> from reference_models import create_model
        >>> model = create_model("mana", "tiny").eval()
        >>> upscale_clip(model, torch.rand(3, 3, 10, 12)).shape
        torch.Size([3, 3, 40, 48])
    """
    options: dict[str, Any] = dict(
        tile=tile,
        tile_overlap=tile_overlap,
        batch=batch,
        clip_stride=clip_stride,
        max_seq_len=max_seq_len,
        seq_overlap=seq_overlap,
        max_bytes=max_bytes,
        precision=precision,
    )
    if isinstance(clip, torch.Tensor) and clip.dim() == 5:
        return torch.stack([upscale_clip(model, c, progress=progress, spill_dir=spill_dir, **options) for c in clip])
    if check_shape(clip, "T C H W", name="clip", C=3)["T"] < 1:
        raise ValueError("clip has no frames")
    from reference_models.inference.streaming import is_recurrent, stream_upscale

    if is_recurrent(model) and max_seq_len is None and tile is not None:
        # Streaming never cuts frames; each tile instead runs the whole clip (in memory) as one sequence.
        options["max_seq_len"] = clip.shape[0]
    elif is_recurrent(model) and max_seq_len is None:
        # In this thread (no worker): every frame lands in the output tensor, which is allocated once.
        height, width, scale = clip.shape[-2], clip.shape[-1], int(cast(int, model.scale))
        out = None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=clip.shape[0], unit="frame")

        def keep(i: int, sr: torch.Tensor) -> None:
            nonlocal out
            if out is None:
                out = sr.new_empty(clip.shape[0], 3, scale * height, scale * width)
            out[i] = sr
            if bar is not None:
                bar.update(1)

        try:
            stream_upscale(
                model, clip.unbind(0), emit=keep, max_bytes=max_bytes, spill_dir=spill_dir, precision=precision
            )
        finally:
            if bar is not None:
                bar.close()
        assert out is not None  # a clip has at least one frame
        return out
    if spill_dir is not None:
        raise ValueError("spill_dir applies to recurrent models run as one sequence")
    frames: Iterable[Any] = upscale_frames(model, clip.unbind(0), **options)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=clip.shape[0], unit="frame")
    return torch.stack(list(frames))
