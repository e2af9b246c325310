"""Convolutional LSTM (Shi et al., "Convolutional LSTM Network", NeurIPS 2015)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["ConvLSTMState", "ConvLSTMCell", "ConvLSTM"]


class ConvLSTMState(NamedTuple):
    """Hidden and cell state of a ConvLSTM, each ``(B, hidden_channels, H, W)``."""

    h: torch.Tensor
    c: torch.Tensor


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step without peepholes, as in Zooming Slow-Mo's ``ConvLSTMCell``.

    A single convolution over ``[x_t, h_{t-1}]`` gives the gates ``i, f, o`` (sigmoid) and the
    candidate ``g`` (tanh); ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. A missing state
    starts at zeros on the input's device and dtype.

    Args:
        in_channels: channels of ``x_t``.
        hidden_channels: channels of ``h`` and ``c``.
        kernel_size: odd kernel size of the gate convolution.
        bias: whether the gate convolution has a bias.

    Shape:
        - x: ``(B, in_channels, H, W)``; state: two ``(B, hidden_channels, H, W)`` tensors or ``None``
        - Output: :class:`ConvLSTMState` ``(h, c)``, each ``(B, hidden_channels, H, W)``

    Examples:
        >>> cell = ConvLSTMCell(in_channels=3, hidden_channels=8)
        >>> h, c = cell(torch.randn(2, 3, 10, 12))
        >>> h.shape
        torch.Size([2, 8, 10, 12])
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )

    def initial_state(self, x: torch.Tensor) -> ConvLSTMState:
        """Zero ``(h, c)`` matching ``x``'s batch, size, device and dtype."""
        zeros = x.new_zeros(x.shape[0], self.hidden_channels, x.shape[-2], x.shape[-1])
        return ConvLSTMState(zeros, zeros)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> ConvLSTMState:
        dims = check_shape(x, "B C H W", name="x", C=self.in_channels)
        if state is None:
            state = self.initial_state(x)
        h, c = state
        for part, tensor in (("h", h), ("c", c)):
            check_shape(
                tensor, "B C H W", name=f"state.{part}", B=dims["B"], C=self.hidden_channels, H=dims["H"], W=dims["W"]
            )
        gates = self.conv(torch.cat((x, h), dim=1))
        i, f, o, g = torch.split(gates, self.hidden_channels, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return ConvLSTMState(h, c)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, hidden_channels={self.hidden_channels}, kernel_size={self.kernel_size}"


class ConvLSTM(nn.Module):
    """A ConvLSTM run over a clip, causal or bidirectional.

    Unidirectional: ``out_t`` depends on frames ``0..t`` only, and feeding the returned state into
    the next call continues the sequence exactly. Bidirectional: a second cell with its own weights
    runs from the last frame to the first, and a 1x1 convolution fuses the two hidden sequences.

    Args:
        in_channels: channels of each input frame.
        hidden_channels: channels of the hidden state (and of the output).
        kernel_size: odd kernel size of the gate convolutions.
        bidirectional: also run backwards in time and fuse.

    Shape:
        - clip: ``(B, T, in_channels, H, W)``; state: ``(h, c)`` of the forward direction or ``None``
        - Output: ``(B, T, hidden_channels, H, W)`` and the forward direction's final
          :class:`ConvLSTMState` (the one that can carry on into the next clip)

    Examples:
        >>> lstm = ConvLSTM(in_channels=3, hidden_channels=8, bidirectional=True)
        >>> out, (h, c) = lstm(torch.randn(2, 4, 3, 9, 9))
        >>> out.shape
        torch.Size([2, 4, 8, 9, 9])
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int = 3, bidirectional: bool = False
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.bidirectional = bidirectional
        self.forward_cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)
        if bidirectional:
            self.backward_cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)
            self.fusion = nn.Conv2d(2 * hidden_channels, hidden_channels, 1)

    @staticmethod
    def _run(
        cell: ConvLSTMCell, frames: list[torch.Tensor], state: ConvLSTMState | None
    ) -> tuple[list[torch.Tensor], ConvLSTMState]:
        outputs = []
        for frame in frames:
            state = cell(frame, state)
            outputs.append(state.h)
        assert state is not None
        return outputs, state

    def forward(
        self, clip: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, ConvLSTMState]:
        check_shape(clip, "B T C H W", name="clip", C=self.in_channels)
        frames = list(clip.unbind(dim=1))
        forward_out, final = self._run(self.forward_cell, frames, None if state is None else ConvLSTMState(*state))
        if not self.bidirectional:
            return torch.stack(forward_out, dim=1), final
        backward_out, _ = self._run(self.backward_cell, frames[::-1], None)
        fused = [self.fusion(torch.cat((f, b), dim=1)) for f, b in zip(forward_out, reversed(backward_out))]
        return torch.stack(fused, dim=1), final

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, hidden_channels={self.hidden_channels}, bidirectional={self.bidirectional}"
