"""The plain folder of HR clips (sub-folders of frames, or video files), with no provided LR frames."""

from __future__ import annotations

from pathlib import Path

from reference_models.data.dataset import load_clips
from reference_models.data.video_set import VideoSet

__all__ = ["folder"]


def folder(root: str | Path, scale: int = 4, cache_bytes: int = 2 << 30) -> VideoSet:
    """The clips :func:`reference_models.data.load_clips` finds under ``root``; LR is made by a degradation."""
    return VideoSet("folder", load_clips(root, cache_bytes=cache_bytes), scale=scale)
