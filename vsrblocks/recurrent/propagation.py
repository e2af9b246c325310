"""Recurrent propagation of features along a clip: BasicVSR's bidirectional and BasicVSR++'s second-order grid.

- :class:`BidirectionalPropagation` (Chan et al., "BasicVSR: The Search for Essential Components in Video
  Super-Resolution and Beyond", CVPR 2021): a backward sweep (last frame to first) and then a forward sweep,
  each carrying a feature map from frame to frame, flow-warped onto the next frame and updated by the
  sweep's own cell.
- :class:`SecondOrderGridPropagation` (Chan et al., "BasicVSR++: Improving Video Super-Resolution with
  Enhanced Propagation and Alignment", CVPR 2022): several sweeps alternating backward and forward
  (``backward_1, forward_1, backward_2, forward_2``); each sweep aligns the features of the two previous
  frames with its own alignment module (second-order propagation) and sees the features of all earlier
  sweeps at the current frame (grid propagation).

The cells, alignment modules and flow network are the user's modules, so a new recurrent VSR network is its
feature extractor, its cells and its reconstruction (``BasicVSR`` is about twenty lines).

**Streaming.** Both blocks read frames lazily from a frame source (``len(source)``, ``source[i]`` a
``(B, C, H, W)`` tensor; ``clip.unbind(1)`` is one) and keep every sweep's per-frame features in a
:class:`~vsrblocks.recurrent.FeatureStore`: a sweep ``put``\\ s its output for frame ``i`` under its name, a
later sweep ``get``\\ s it back in its own order, and it is ``discard``\\ ed as soon as nothing reads it again.
The last sweep's features are not stored: :meth:`stream` hands frame ``i``'s features of every sweep to
``emit(i, features)`` as the last sweep produces them, and then discards frame ``i`` everywhere. With a store
that spills to disk, a video of any length runs in bounded memory with the same maths as ``forward``.

**Cell calls.** A sweep's cell is called once per frame as
``cell(x_i, *earlier_i, propagated, **inputs)``: ``x_i`` the frame (bidirectional) or its spatial features
(grid), ``earlier_i`` the features of earlier sweeps at frame ``i`` (grid: all of them; bidirectional: the
backward sweep's, for the forward cell, with ``forward_sees_backward=True``), ``propagated`` the aligned
features carried from the previous frame, and ``inputs`` the keyword tensors that :meth:`stream`'s
``cell_inputs(branch, i)`` returns (IconVSR's keyframe features; nothing by default).
:class:`~vsrblocks.recurrent.ConcatCell` concatenates the positional inputs in this order, which is what
BasicVSR, IconVSR and BasicVSR++ do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.recurrent.feature_store import FeatureStore
from vsrblocks.recurrent.frame_source import FrameSource
from vsrblocks.shapes import check_shape

__all__ = ["BidirectionalPropagation", "SecondOrderGridPropagation"]

Emit = Callable[[int, dict[str, torch.Tensor]], None]
CellInputs = Callable[[str, int], Mapping[str, torch.Tensor]]

_NO_INPUTS: dict[str, torch.Tensor] = {}


class _Frames:
    """A frame source read with shape checks: every frame ``(B, C, H, W)`` of the first frame's B, C, H, W."""

    def __init__(self, source: FrameSource | torch.Tensor, channels: int | None) -> None:
        if isinstance(source, torch.Tensor):
            check_shape(source, "B T C H W", name="clip", C=channels)
            source = source.unbind(1)
        self.source = source
        self.length = len(source)
        if self.length < 1:
            raise ValueError("frames: expected at least one frame, got an empty sequence")
        first = check_shape(source[0], "B C H W", name="frames[0]", C=channels)
        self.dims = {axis: first[axis] for axis in ("B", "C", "H", "W")}

    def __getitem__(self, index: int) -> torch.Tensor:
        frame = self.source[index]
        check_shape(frame, "B C H W", name=f"frames[{index}]", **self.dims)
        return frame


def _sweep_order(direction: str, length: int) -> range:
    return range(length - 1, -1, -1) if direction == "backward" else range(length)


def _direction(branch: str) -> str:
    direction = branch.split("_", 1)[0]
    if direction not in ("backward", "forward"):
        raise ValueError(f"branch names must start with 'backward' or 'forward', got {branch!r}")
    return direction


class BidirectionalPropagation(nn.Module):
    """BasicVSR's bidirectional recurrent propagation with flow-warped features.

    Backward sweep, for ``i = T-1 ... 0``: ``h_i = backward_cell(x_i, warp(h_{i+1}, flow(x_i, x_{i+1})))``;
    then the forward sweep, for ``i = 0 ... T-1``:
    ``g_i = forward_cell(x_i, [h_i,] warp(g_{i-1}, flow(x_i, x_{i-1})))``; the carried feature starts at zero
    and is not warped at the first frame of a sweep. ``warp`` is :func:`~vsrblocks.align.flow_warp`
    (bilinear, zeros outside). Each flow is computed once, when its sweep reaches it (BasicSR's
    ``flows_backward[i] = flow(x_i, x_{i+1})``, ``flows_forward[i] = flow(x_{i+1}, x_i)``), so nothing but
    the backward features is kept between the sweeps. See the module docstring for the cell call and
    streaming.

    Args:
        channels: C, channels of the propagated features (every cell's output).
        backward_cell: the backward sweep's cell, called ``cell(x_i, propagated, **inputs)``.
        forward_cell: the forward sweep's cell, called ``cell(x_i, [h_i,] propagated, **inputs)``.
        flow: optical flow network called ``flow(ref, supp) -> (B, 2, H, W)`` with
            ``ref(p) ≈ supp(p + flow(p))`` (:class:`~vsrblocks.align.SPyNet`).
        forward_sees_backward: pass the backward features ``h_i`` to the forward cell (IconVSR).

    Shape:
        - Input of :meth:`forward`: ``(B, T, C_in, H, W)`` (or a frame source), any T >= 1
        - Output of :meth:`forward`: ``(B, T, 2 C, H, W)``, backward then forward features
        - ``emit`` of :meth:`stream`: ``{"backward": (B, C, H, W), "forward": (B, C, H, W)}``

    Examples:
        >>> from vsrblocks.recurrent import ConcatCell
        >>> def flow(ref, supp):
        ...     return ref.new_zeros(ref.shape[0], 2, *ref.shape[2:])
        >>> prop = BidirectionalPropagation(
        ...     8, ConcatCell(nn.Conv2d(3 + 8, 8, 3, padding=1)), ConcatCell(nn.Conv2d(3 + 8, 8, 3, padding=1)), flow)
        >>> prop(torch.rand(2, 4, 3, 9, 11)).shape
        torch.Size([2, 4, 16, 9, 11])
    """

    branches = ("backward", "forward")

    def __init__(
        self,
        channels: int,
        backward_cell: nn.Module,
        forward_cell: nn.Module,
        flow: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        forward_sees_backward: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.backward_cell = backward_cell
        self.forward_cell = forward_cell
        self.flow = flow
        self.forward_sees_backward = forward_sees_backward

    def stream(
        self,
        frames: FrameSource | torch.Tensor,
        *,
        emit: Emit,
        store: FeatureStore | None = None,
        cell_inputs: CellInputs | None = None,
    ) -> None:
        """Run both sweeps over ``frames``, calling ``emit(i, {"backward": h_i, "forward": g_i})`` for
        ``i = 0 ... T-1`` as the forward sweep produces frame ``i``.

        Args:
            frames: a frame source (``len``, ``frames[i] -> (B, C_in, H, W)``) or a ``(B, T, C_in, H, W)`` clip.
            emit: receives each frame's features; frame ``i``'s backward features are discarded from the
                store right after it returns.
            store: where the backward features wait for the forward sweep (default: a fresh in-memory store).
            cell_inputs: ``cell_inputs(branch, i)`` returns extra keyword tensors for the cell of ``branch``
                (``"backward"``/``"forward"``) at frame ``i``.
        """
        reader = _Frames(frames, None)
        store = FeatureStore() if store is None else store
        extra = cell_inputs if cell_inputs is not None else (lambda branch, index: _NO_INPUTS)
        for direction in self.branches:
            cell = self.backward_cell if direction == "backward" else self.forward_cell
            propagated = previous = None
            for i in _sweep_order(direction, reader.length):
                frame = reader[i]
                if propagated is None:
                    propagated = frame.new_zeros(reader.dims["B"], self.channels, reader.dims["H"], reader.dims["W"])
                else:
                    assert previous is not None  # set by the iteration that set propagated
                    propagated = flow_warp(propagated, self.flow(frame, previous))
                earlier: tuple[torch.Tensor, ...] = ()
                if direction == "forward" and self.forward_sees_backward:
                    earlier = (store.get("backward", i),)
                propagated = cell(frame, *earlier, propagated, **extra(direction, i))
                check_shape(
                    propagated,
                    "B C H W",
                    name=f"{direction} cell output",
                    C=self.channels,
                    B=reader.dims["B"],
                    H=reader.dims["H"],
                    W=reader.dims["W"],
                )
                previous = frame
                if direction == "backward":
                    store.put("backward", i, propagated)
                else:
                    backward = earlier[0] if earlier else store.get("backward", i)
                    emit(i, {"backward": backward, "forward": propagated})
                    store.discard("backward", i)

    def forward(self, frames: FrameSource | torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        self.stream(frames, emit=lambda i, features: outputs.append(torch.cat(list(features.values()), dim=1)))
        return torch.stack(outputs, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, forward_sees_backward={self.forward_sees_backward}"


class SecondOrderGridPropagation(nn.Module):
    """BasicVSR++'s second-order grid propagation.

    ``extractor`` maps each frame to its spatial features ``s_i``. Then each branch in ``branches`` sweeps
    the clip in its direction (a name starting with ``backward`` runs from the last frame to the first,
    ``forward`` the other way). At the ``k``-th frame of a sweep, coming from frames ``j1`` (previous)
    and ``j2`` (the one before):

    - ``flow_1`` = flow from the current frame to ``j1`` (BasicSR's ``flows_backward`` / ``flows_forward``),
      ``flow_2 = flow_1 + warp(flow_{j1 -> j2}, flow_1)`` (composed), zero while there is no ``j2``;
    - ``a = align[branch](f_{j1}, f_{j2}, s_i, flow_1, flow_2)`` with the branch's own features
      ``f_{j1}``, ``f_{j2}`` (zeros while they do not exist), skipped at the sweep's first frame (``a = 0``);
    - ``f_i = a + cell[branch](s_i, *earlier_i, a, **inputs)`` (``f_i = cell(...)`` with ``residual=False``),
      ``earlier_i`` the features of all earlier branches at frame ``i``, in branch order.

    The alignment module is the user's: :class:`~vsrblocks.align.SecondOrderDeformableAlignment` is
    BasicVSR++'s. Flows are computed once by the first branch of each direction and stored for the later
    ones (``"flows_backward"``/``"flows_forward"``, BasicSR's indices), spatial features under
    ``"spatial"``, each branch's features under its name. See the module docstring for streaming.

    Args:
        channels: C, channels of the spatial features and of every branch's features.
        extractor: frame ``(B, C_in, H, W)`` -> spatial features ``(B, C, H, W)``.
        align: one alignment module per branch, called
            ``align(feat_1, feat_2, current, flow_1, flow_2) -> (B, C, H, W)``.
        cells: one cell per branch (the ``k``-th sees ``(k + 2) C`` channels in all).
        flow: optical flow network called ``flow(ref, supp) -> (B, 2, H, W)`` on the frames (wrap it to
            compute flows on other images, e.g. downscaled frames).
        branches: branch names in sweep order; every ``align``/``cells`` key.
        residual: add the aligned features to the cell's output (BasicVSR++).

    Shape:
        - Input of :meth:`forward`: ``(B, T, C_in, H, W)`` (or a frame source), any T >= 1
        - Output of :meth:`forward`: ``(B, T, (1 + len(branches)) C, H, W)``: spatial, then each branch
        - ``emit`` of :meth:`stream`: ``{"spatial": s_i, branch: f_i, ...}``, each ``(B, C, H, W)``

    Examples:
        >>> from vsrblocks.recurrent import ConcatCell
        >>> class WarpOnly(nn.Module):  # first-order flow warping in place of deformable alignment
        ...     def forward(self, feat_1, feat_2, current, flow_1, flow_2):
        ...         return flow_warp(feat_1, flow_1)
        >>> names = ("backward_1", "forward_1")
        >>> prop = SecondOrderGridPropagation(
        ...     8, nn.Conv2d(3, 8, 3, padding=1), {n: WarpOnly() for n in names},
        ...     {n: ConcatCell(nn.Conv2d((k + 2) * 8, 8, 3, padding=1)) for k, n in enumerate(names)},
        ...     flow=lambda ref, supp: torch.zeros_like(ref[:, :2]), branches=names)
        >>> prop(torch.rand(1, 3, 3, 9, 11)).shape
        torch.Size([1, 3, 24, 9, 11])
    """

    def __init__(
        self,
        channels: int,
        extractor: nn.Module,
        align: Mapping[str, nn.Module],
        cells: Mapping[str, nn.Module],
        flow: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        branches: Sequence[str] = ("backward_1", "forward_1", "backward_2", "forward_2"),
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.branches = tuple(branches)
        if not self.branches or len(set(self.branches)) != len(self.branches):
            raise ValueError(f"branches must be distinct names, at least one, got {self.branches}")
        for branch in self.branches:
            _direction(branch)
        for what, modules in (("align", align), ("cells", cells)):
            if set(modules) != set(self.branches):
                raise ValueError(f"{what}: expected one module for each of {self.branches}, got {sorted(modules)}")
        self.channels = channels
        self.residual = residual
        self.extractor = extractor
        self.align = nn.ModuleDict({b: align[b] for b in self.branches})
        self.cells = nn.ModuleDict({b: cells[b] for b in self.branches})
        self.flow = flow

    def stream(
        self,
        frames: FrameSource | torch.Tensor,
        *,
        emit: Emit,
        store: FeatureStore | None = None,
        cell_inputs: CellInputs | None = None,
    ) -> None:
        """Run every branch over ``frames``, calling ``emit(i, {"spatial": s_i, branch: f_i, ...})`` as the
        last branch produces frame ``i`` (in its sweep order); frame ``i`` is then discarded everywhere.

        Args:
            frames: a frame source (``len``, ``frames[i] -> (B, C_in, H, W)``) or a ``(B, T, C_in, H, W)`` clip.
            emit: receives each frame's features.
            store: where features and flows wait for later branches (default: a fresh in-memory store).
            cell_inputs: ``cell_inputs(branch, i)`` returns extra keyword tensors for that branch's cell at
                frame ``i``.
        """
        reader = _Frames(frames, None)
        store = FeatureStore() if store is None else store
        extra = cell_inputs if cell_inputs is not None else (lambda branch, index: _NO_INPUTS)
        directions = [_direction(b) for b in self.branches]
        for k, branch in enumerate(self.branches):
            direction = directions[k]
            computes_flows = direction not in directions[:k]
            keeps_flows = direction in directions[k + 1 :]
            last = k == len(self.branches) - 1
            self._sweep(reader, store, extra, branch, direction, k, computes_flows, keeps_flows, emit if last else None)

    def _sweep(
        self,
        reader: _Frames,
        store: FeatureStore,
        extra: CellInputs,
        branch: str,
        direction: str,
        k: int,
        computes_flows: bool,
        keeps_flows: bool,
        emit: Emit | None,
    ) -> None:
        dims = reader.dims
        earlier_branches = self.branches[:k]
        flow_key = f"flows_{direction}"
        # feat_1 / flow_1: the previous frame's features and the flow to it; feat_2 / flow_prev one frame further.
        feat_1 = feat_2 = flow_prev = previous_frame = None
        for i in _sweep_order(direction, reader.length):
            frame = reader[i] if (computes_flows or k == 0) else None
            if k == 0:
                current = self.extractor(frame)
                check_shape(
                    current, "B C H W", name="extractor output", C=self.channels, B=dims["B"], H=dims["H"], W=dims["W"]
                )
                store.put("spatial", i, current)
            else:
                current = store.get("spatial", i)
            if feat_1 is None:
                aligned = current.new_zeros(dims["B"], self.channels, dims["H"], dims["W"])
            else:
                # BasicSR's flow indices: flows_backward[i] = flow(x_i, x_{i+1}), flows_forward[i] = flow(x_{i+1}, x_i).
                flow_index = i if direction == "backward" else i - 1
                if computes_flows:
                    assert frame is not None and previous_frame is not None  # read on every frame of this sweep
                    flow_1 = self.flow(frame, previous_frame)
                    if keeps_flows:
                        store.put(flow_key, flow_index, flow_1)
                else:
                    flow_1 = store.get(flow_key, flow_index)
                    if not keeps_flows:
                        store.discard(flow_key, flow_index)
                if feat_2 is None:
                    feat_2, flow_2 = torch.zeros_like(feat_1), torch.zeros_like(flow_1)
                else:
                    assert flow_prev is not None  # set on the frame that set feat_2
                    flow_2 = flow_1 + flow_warp(flow_prev, flow_1)
                aligned = self.align[branch](feat_1, feat_2, current, flow_1, flow_2)
                flow_prev = flow_1
            earlier = [store.get(name, i) for name in earlier_branches]
            out = self.cells[branch](current, *earlier, aligned, **extra(branch, i))
            feature = aligned + out if self.residual else out
            check_shape(
                feature, "B C H W", name=f"{branch} output", C=self.channels, B=dims["B"], H=dims["H"], W=dims["W"]
            )
            feat_2, feat_1 = feat_1, feature
            previous_frame = frame
            if emit is None:
                store.put(branch, i, feature)
                continue
            emit(i, {"spatial": current, **dict(zip(earlier_branches, earlier)), branch: feature})
            for name in ("spatial", *earlier_branches):
                store.discard(name, i)

    def forward(self, frames: FrameSource | torch.Tensor) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}

        def keep(i: int, features: dict[str, torch.Tensor]) -> None:
            outputs[i] = torch.cat(list(features.values()), dim=1)

        self.stream(frames, emit=keep)
        return torch.stack([outputs[i] for i in range(len(outputs))], dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, branches={self.branches}, residual={self.residual}"
