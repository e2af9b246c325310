"""Lazily read frames: what the recurrent propagation blocks and networks take as their input sequence."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["FrameSource"]


@runtime_checkable
class FrameSource(Protocol):
    """Any sequence of frames read one at a time: ``len(source)`` frames, ``source[i]`` a ``(B, C, H, W)`` tensor.

    A clip tensor viewed per frame is one (``clip.unbind(1)``: views, no copy); so is a list of frames, or an
    object that decodes frame ``i`` of a video file only when asked for it. The propagation blocks read each
    frame when a sweep reaches it (and again in a later sweep), so a source should be cheap to index more
    than once.

    Examples:
        >>> clip = torch.zeros(2, 5, 3, 8, 8)
        >>> frames = clip.unbind(1)
        >>> isinstance(frames, FrameSource), len(frames), frames[4].shape
        (True, 5, torch.Size([2, 3, 8, 8]))
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...
