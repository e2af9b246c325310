"""The error a dataset on disk raises when its layout is missing or inconsistent."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A missing or inconsistent part of a dataset (a missing folder, 40 GT frames against 39 LR frames, a list
    naming an absent septuplet); the message names it in one line, which the command line prints as
    ``error: ...``."""
