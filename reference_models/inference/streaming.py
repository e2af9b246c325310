"""Whole-video super-resolution with a recurrent model, as one exact sequence, in bounded memory.

A recurrent network (BasicVSR, IconVSR, BasicVSR++) has a ``stream(frames, *, store, emit)`` method: it reads
its LR frames lazily (``frames[i]``), keeps each sweep's per-frame features in a
:class:`~vsrblocks.recurrent.FeatureStore` and calls ``emit(i, sr_frame)`` as the last sweep produces frame
``i``. :func:`stream_upscale` runs it over a whole video with a
:class:`~vsrblocks.recurrent.SpillingFeatureStore`, so that memory stays within a budget whatever the
video's length (features beyond the budget go to pinned CPU memory on a GPU, then to files in a private
temporary folder, removed afterwards also on an interrupt), with the same maths as the whole-clip forward.

LR frames come from anything with ``len`` and ``[i]`` (a frame folder reads frame ``i`` from its file);
an input that can only be read in order (a video being decoded, a generator) is read once and its frames
kept in the same store (``uint8`` LR frames are small next to the features), so the backward sweep can
start at the last frame.

:class:`SweepProgress` tells where the time goes: it counts the frames each sweep of the model's
propagation blocks has done (forward hooks on their cells) and gives an ETA for the whole run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from reference_models.inference.precision import low_precision_weights, mixed_dtype, mixed_precision, model_device_dtype
from vsrblocks.recurrent import BidirectionalPropagation, FeatureStore, SecondOrderGridPropagation, SpillingFeatureStore
from vsrblocks.shapes import check_shape

__all__ = ["is_recurrent", "stream_upscale", "stream_frames", "SweepProgress", "SweepState", "LazyFrames"]


def is_recurrent(model: Any) -> bool:
    """Whether ``model`` super-resolves whole sequences with ``stream`` (BasicVSR, IconVSR, BasicVSR++)."""
    return callable(getattr(model, "stream", None))


class _Cancelled(Exception):
    """The consumer of :func:`stream_frames` stopped early: the worker unwinds (and its store cleans up)."""


@dataclass(frozen=True)
class SweepState:
    """Where a streamed run is: sweep ``sweep`` (1-based) of ``sweeps``, named ``branch``, ``done`` of
    ``frames`` frames of it; ``elapsed`` seconds so far and ``eta`` seconds left (``None`` before the first
    frame)."""

    branch: str
    sweep: int
    sweeps: int
    done: int
    frames: int
    elapsed: float
    eta: float | None


class SweepProgress:
    """Counts the frames of every sweep of ``model``'s propagation blocks and reports a :class:`SweepState`
    after each one (forward hooks on the sweeps' cells; removed on exit).

    The ETA assumes every sweep frame costs the same (the last sweep, which also reconstructs, costs more:
    the ETA grows a little when it starts). ``check`` is called before every cell call (a place to stop a
    run early). A model without :class:`~vsrblocks.recurrent.BidirectionalPropagation` or
    :class:`~vsrblocks.recurrent.SecondOrderGridPropagation` reports nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        frames: int,
        report: Callable[[SweepState], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.frames = frames
        self.report = report
        self.check = check
        self.cells: list[tuple[str, nn.Module]] = []
        for module in model.modules():
            if isinstance(module, BidirectionalPropagation):
                self.cells += [("backward", module.backward_cell), ("forward", module.forward_cell)]
            elif isinstance(module, SecondOrderGridPropagation):
                self.cells += [(branch, module.cells[branch]) for branch in module.branches]
        self.sweeps = len(self.cells)
        self.done = [0] * self.sweeps
        self.start = time.perf_counter()
        self._handles: list[Any] = []

    def __enter__(self) -> SweepProgress:
        self.start = time.perf_counter()
        for k, (_, cell) in enumerate(self.cells):
            self._handles.append(cell.register_forward_pre_hook(lambda module, args: self._before()))
            self._handles.append(cell.register_forward_hook(lambda module, args, out, k=k: self._after(k)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _before(self) -> None:
        if self.check is not None:
            self.check()

    def _after(self, k: int) -> None:
        self.done[k] += 1
        if self.report is None:
            return
        elapsed = time.perf_counter() - self.start
        finished = sum(self.done)
        remaining = self.sweeps * self.frames - finished
        eta = elapsed / finished * remaining
        self.report(SweepState(self.cells[k][0], k + 1, self.sweeps, self.done[k], self.frames, elapsed, eta))


class LazyFrames:
    """The LR frames of a run as a frame source: ``len(frames)``, ``frames[i] -> (1, 3, H, W)`` on the
    model's device and dtype, read only when asked for.

    ``source`` with ``len`` and ``[i]`` is read directly (each time: a sweep that reads a frame again reads
    it again). Any other iterable is read in order, once, the first time a frame beyond those read so far is
    needed; its frames are kept in ``store`` under ``"input"`` (as given, e.g. ``uint8`` on the CPU), which
    spills them to disk beyond its budget.

    Frames are ``(3, H, W)`` tensors (or ``(H, W, 3)`` ``uint8`` arrays with ``channels_last=True``), float
    in [0, 1] or ``uint8``, all of one size.
    """

    def __init__(
        self,
        source: Sequence[Any] | Iterable[Any],
        store: FeatureStore,
        device: torch.device,
        dtype: torch.dtype,
        *,
        length: int | None = None,
        channels_last: bool = False,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.device, self.dtype = device, dtype
        self.channels_last = channels_last
        self.check = check
        self.indexed = hasattr(source, "__getitem__") and hasattr(source, "__len__")
        self.source = source
        self.iterator: Iterator[Any] | None = None if self.indexed else iter(source)
        self.read = 0
        self.length = len(cast(Sequence[Any], source)) if self.indexed else length
        self.shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        if self.length is None:
            self._read_to(None)
        assert self.length is not None  # reading to the end sets it
        return self.length

    def _read_to(self, index: int | None) -> None:
        while self.iterator is not None and (index is None or self.read <= index):
            try:
                frame = next(self.iterator)
            except StopIteration:
                self.iterator = None
                self.length = self.read
                break
            if self.check is not None:
                self.check()
            self.store.put("input", self.read, self._as_tensor(frame))
            self.read += 1

    def _as_tensor(self, frame: Any) -> torch.Tensor:
        frame = torch.as_tensor(frame)
        if self.channels_last:
            frame = frame.permute(2, 0, 1)
        return frame

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.check is not None:
            self.check()
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} of a sequence of {len(self)}")
        if self.indexed:
            frame = self._as_tensor(cast(Sequence[Any], self.source)[index])
        else:
            self._read_to(index)
            frame = self.store.get("input", index)
        check_shape(frame, "C H W", name=f"frame {index}", C=3)
        if self.shape is not None and tuple(frame.shape) != self.shape:
            raise ValueError(f"frame {index} is {tuple(frame.shape)}, the first frame read was {self.shape}")
        self.shape = tuple(frame.shape)
        frame = frame.to(self.device)
        frame = frame.float() / 255.0 if frame.dtype == torch.uint8 else frame
        return frame.to(self.dtype)[None]


def stream_upscale(
    model: nn.Module,
    frames: Sequence[Any] | Iterable[Any],
    *,
    emit: Callable[[int, torch.Tensor], None],
    max_bytes: int | None = None,
    pinned_bytes: int = 0,
    spill_dir: str | Path | None = None,
    length: int | None = None,
    channels_last: bool = False,
    report: Callable[[SweepState], None] | None = None,
    check: Callable[[], None] | None = None,
    precision: str = "float32",
) -> None:
    """Super-resolve ``frames`` as one sequence with a recurrent ``model`` (eval mode), calling
    ``emit(i, sr_frame)`` for ``i = 0 ... T-1`` as the model's last sweep produces them.

    Args:
        model: a network with ``stream`` (:func:`is_recurrent`).
        frames: LR frames (see :class:`LazyFrames`): ``(3, H, W)`` tensors, float in [0, 1] or ``uint8``.
        emit: receives ``(3, scale * H, scale * W)`` float32 frames on the model's device, not clamped.
        max_bytes: memory budget of the stored features (``None``: keep everything in memory, the plain
            whole-clip forward).
        pinned_bytes: pinned CPU memory for features evicted from a GPU, before the disk.
        spill_dir: parent of the spill folder (default: the system's temporary folder).
        length: the number of frames, where ``frames`` has no ``len`` and it is known.
        channels_last: frames are ``(H, W, 3)`` arrays (what :mod:`reference_models.io.video` reads).
        report: receives a :class:`SweepState` after every frame of every sweep.
        check: called before every frame step; raising there stops the run (the store cleans up).
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"``, as in
            :func:`~reference_models.inference.upscale.upscale_frames`: in bfloat16 the convolutions run in
            bfloat16 with float32 islands (flows, warping, norms) and the stored features are bfloat16, half the
            memory and spill of float32; frames and the bilinear base stay float32.

    Raises:
        SpillDiskFullError: the spill folder's disk filled up (an ``OSError`` naming the folder).

    Examples:
        >>> from reference_models import create_model
        >>> model = create_model("basicvsr", "tiny").eval()
        >>> out = {}
        >>> stream_upscale(model, torch.rand(5, 3, 8, 8).unbind(0), emit=out.__setitem__, max_bytes=2048)
        >>> sorted(out), out[4].shape
        ([0, 1, 2, 3, 4], torch.Size([3, 32, 32]))
    """
    if not is_recurrent(model):
        raise ValueError(f"{type(model).__name__} has no stream method (not a recurrent model)")
    device, dtype = model_device_dtype(model)
    mixed = mixed_dtype(model, precision)
    scale = int(cast(int, model.scale))
    if max_bytes is None:
        opened: Any = nullcontext(FeatureStore())
    else:
        opened = SpillingFeatureStore(max_bytes, pinned_bytes=pinned_bytes, directory=spill_dir)
    with opened as store, low_precision_weights(model, mixed):
        source = LazyFrames(frames, store, device, dtype, length=length, channels_last=channels_last, check=check)
        total = len(source)
        dims: dict[str, int] = {}

        def receive(i: int, sr: torch.Tensor) -> None:
            if not dims:
                assert source.shape is not None  # a frame was read before its output
                _, h, w = source.shape
                dims.update(H=scale * h, W=scale * w)
            check_shape(sr, "B C H W", name=f"{type(model).__name__} output of frame {i}", B=1, C=3, **dims)
            emit(i, sr[0].float())

        with torch.no_grad(), mixed_precision(model, mixed), SweepProgress(model, total, report, check):
            cast(Any, model).stream(source, store=store, emit=receive)


def stream_frames(
    model: nn.Module,
    frames: Sequence[Any] | Iterable[Any],
    *,
    skip: Container[int] = (),
    **options: Any,
) -> Iterator[torch.Tensor | None]:
    """:func:`stream_upscale` as a generator: yields the SR frames in order (``None`` for frames in ``skip``).

    The model runs in a worker thread that hands each frame over as it is produced (at most two wait), so
    that writing one frame overlaps computing the next. Closing the generator, or an exception or interrupt
    in the consumer, stops the worker at its next frame step and waits for it (its spill folder is removed
    before this returns). ``options`` are :func:`stream_upscale`'s.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)
    stop = threading.Event()
    threads = torch.get_num_threads()  # OpenMP's thread count is per thread: the worker takes the caller's

    def check() -> None:
        if stop.is_set():
            raise _Cancelled

    def hand(item: tuple[str, Any]) -> None:
        while True:
            check()
            try:
                handoff.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        torch.set_num_threads(threads)
        try:
            stream_upscale(
                model,
                frames,
                emit=lambda i, sr: hand(("frame", (i, None if i in skip else sr))),
                check=check,
                **options,
            )
            hand(("done", None))
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, which raises it
            try:
                hand(("error", exc))
            except _Cancelled:
                pass

    worker = threading.Thread(target=work, name="stream_frames", daemon=True)
    worker.start()
    expected = 0
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "done":
                return
            if kind == "error":
                raise value
            i, sr = value
            if i != expected:
                raise RuntimeError(f"{type(model).__name__}.stream emitted frame {i}, expected frame {expected}")
            expected += 1
            yield sr
    finally:
        stop.set()
        worker.join()
