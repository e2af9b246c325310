"""Deformable ConvLSTM of Zooming Slow-Mo (Xiang et al., "Zooming Slow-Mo: Fast and Accurate One-Stage
Space-Time Video Super-Resolution", CVPR 2020; official ``Sakuya_arch.py``, ``DeformableConvLSTM`` and
``BiDeformableConvLSTM``)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from vsrblocks.align.deform_conv import Backend
from vsrblocks.align.pcd import EasyPCD
from vsrblocks.recurrent.conv_lstm import ConvLSTMCell, ConvLSTMState
from vsrblocks.shapes import check_shape

__all__ = ["DeformableConvLSTM"]


class DeformableConvLSTM(nn.Module):
    """A ConvLSTM whose previous hidden and cell states are deformably aligned to the current input.

    At each step ``t``: ``h~ = pcd_h(g_t, h_{t-1})`` and ``c~ = pcd_c(g_t, c_{t-1})`` (two
    :class:`~vsrblocks.align.EasyPCD` modules: offsets from ``[g_t, state]`` over a ``pcd_levels`` pyramid,
    both directions, 1x1 fusion), then ``(h_t, c_t) = cell(x_t, (h~, c~))`` with a
    :class:`~vsrblocks.recurrent.ConvLSTMCell`. The guide ``g_t`` is ``x_t`` (ZSM), or ``input_proj(x_t)``
    (1x1 convolution) when ``channels != hidden_channels``, or an explicit ``guide`` clip. The initial state
    is zeros, aligned like any other (as in ZSM).

    ``bidirectional=True`` is ZSM's ``BiDeformableConvLSTM``: the **same** module (shared weights) also runs
    over the time-reversed clip; the backward outputs are re-reversed, concatenated with the forward ones
    per step and fused by a 1x1 convolution ``2 * hidden -> hidden``.

    Unidirectional, ``out_t`` depends on frames ``0..t`` only, and passing the returned state to the next
    call continues the sequence exactly. ``align=False`` drops the alignment (a plain ConvLSTM, for
    ablations); :meth:`EasyPCD.identity_init_` on ``pcd_h`` and ``pcd_c`` gives the same function with the
    alignment modules in place.

    Args:
        channels: channels of each input frame.
        hidden_channels: channels of ``h`` and ``c`` (default ``channels``, as in ZSM).
        kernel_size: odd kernel of the ConvLSTM gate convolution.
        deform_groups: deformable groups of the alignment DCNs (ZSM: 8).
        pcd_levels: pyramid levels of the alignment (ZSM: 3; 1 is single-level and cheaper).
        bidirectional: also run backwards with shared weights and fuse.
        align: align the state to the input (``False``: plain ConvLSTM).
        backend: :class:`~vsrblocks.align.DeformConv2d` backend.

    Shape:
        - clip: ``(B, T, channels, H, W)``, any ``H, W``; state: ``(h, c)``, each ``(B, hidden, H, W)``, or ``None``;
          guide: ``(B, T, hidden, H, W)`` or ``None``
        - Output: ``(B, T, hidden, H, W)`` and the forward direction's final :class:`ConvLSTMState`

    Examples:
        >>> lstm = DeformableConvLSTM(8, deform_groups=2, bidirectional=True)
        >>> out, (h, c) = lstm(torch.randn(2, 3, 8, 9, 7))
        >>> out.shape, h.shape
        (torch.Size([2, 3, 8, 9, 7]), torch.Size([2, 8, 9, 7]))
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
        deform_groups: int = 8,
        pcd_levels: int = 3,
        bidirectional: bool = False,
        align: bool = True,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        hidden = channels if hidden_channels is None else hidden_channels
        self.channels = channels
        self.hidden_channels = hidden
        self.bidirectional = bidirectional
        self.align = align
        self.pcd_levels = pcd_levels
        if align:
            self.input_proj = nn.Conv2d(channels, hidden, 1) if hidden != channels else nn.Identity()
            self.pcd_h = EasyPCD(hidden, deform_groups, pcd_levels, backend=backend)
            self.pcd_c = EasyPCD(hidden, deform_groups, pcd_levels, backend=backend)
        self.cell = ConvLSTMCell(channels, hidden, kernel_size)
        if bidirectional:
            self.fusion = nn.Conv2d(2 * hidden, hidden, 1)

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None, guide: torch.Tensor | None = None
    ) -> ConvLSTMState:
        """One time step: align ``state`` to ``guide`` (default: ``x``), then the ConvLSTM cell."""
        dims = check_shape(x, "B C H W", name="x", C=self.channels)
        if guide is not None:
            check_shape(guide, "B C H W", name="guide", B=dims["B"], C=self.hidden_channels, H=dims["H"], W=dims["W"])
        if state is None:
            state = self.cell.initial_state(x)
        h, c = state
        if self.align:
            if guide is None:
                guide = self.input_proj(x)
            h, c = self.pcd_h(guide, h), self.pcd_c(guide, c)
        return cast("ConvLSTMState", self.cell(x, (h, c)))

    def _run(
        self, frames: list[torch.Tensor], guides: list[torch.Tensor | None], state: ConvLSTMState | None
    ) -> tuple[list[torch.Tensor], ConvLSTMState]:
        outputs = []
        for frame, guide in zip(frames, guides):
            state = self.step(frame, state, guide)
            outputs.append(state.h)
        assert state is not None
        return outputs, state

    def forward(
        self,
        clip: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        guide: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ConvLSTMState]:
        dims = check_shape(clip, "B T C H W", name="clip", C=self.channels)
        if state is not None:
            for part, tensor in zip("hc", state):
                check_shape(
                    tensor,
                    "B C H W",
                    name=f"state.{part}",
                    B=dims["B"],
                    C=self.hidden_channels,
                    H=dims["H"],
                    W=dims["W"],
                )
            state = ConvLSTMState(*state)
        frames = list(clip.unbind(dim=1))
        if guide is None:
            guides: list[torch.Tensor | None] = [None] * len(frames)
        else:
            check_shape(
                guide,
                "B T C H W",
                name="guide",
                B=dims["B"],
                T=dims["T"],
                C=self.hidden_channels,
                H=dims["H"],
                W=dims["W"],
            )
            guides = list(guide.unbind(dim=1))
        if not self.bidirectional:
            forward_out, final = self._run(frames, guides, state)
            return torch.stack(forward_out, dim=1), final
        # The directions share every weight, so they run as one batch of 2B: the forward steps over
        # frames 0..T-1 in the first half, the backward (from a zero state) over T-1..0 in the second. Same
        # numbers as two runs, half the operator calls (most of them are small at the 4x resolution).
        batch = dims["B"]
        both_frames = [torch.cat((f, b), dim=0) for f, b in zip(frames, reversed(frames))]
        both_guides = [
            None if g is None else torch.cat((g, cast(torch.Tensor, r)), dim=0)
            for g, r in zip(guides, reversed(guides))
        ]
        if state is None:
            state = self.cell.initial_state(frames[0])
        both_state = ConvLSTMState(*(torch.cat((s, torch.zeros_like(s)), dim=0) for s in state))
        both_out, both_final = self._run(both_frames, both_guides, both_state)
        final = ConvLSTMState(both_final.h[:batch], both_final.c[:batch])
        fused = [
            self.fusion(torch.cat((forward[:batch], backward[batch:]), dim=1))
            for forward, backward in zip(both_out, reversed(both_out))
        ]
        return torch.stack(fused, dim=1), final

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, hidden_channels={self.hidden_channels}, pcd_levels={self.pcd_levels}, "
            f"bidirectional={self.bidirectional}, align={self.align}"
        )
