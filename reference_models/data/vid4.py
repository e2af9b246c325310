"""Vid4 (calendar, city, foliage, walk) as distributed with BasicVSR/MMagic: ``ROOT/GT/<clip>/*.png`` and, when
present, ``ROOT/BIx4/<clip>/`` and ``ROOT/BDx4/<clip>/`` LR frames."""

from __future__ import annotations

from pathlib import Path

from reference_models.data.dataset import FrameCache, FrameFolderClip
from reference_models.data.video_set import DEGRADATION_KINDS, VideoSet, clip_folders, paired_lr_folders, require_dir

__all__ = ["vid4"]


def vid4(root: str | Path, degradation: str = "bi", scale: int = 4, cache: FrameCache | None = None) -> VideoSet:
    """The Vid4 clips under ``root``, with the provided ``BIx4``/``BDx4`` frames of ``degradation`` when present.

    Args:
        root: the folder holding ``GT/`` (and ``BIx4/``, ``BDx4/``).
        degradation: ``"bi"`` or ``"bd"``: which provided LR tree to use.
        scale: the factor (the LR folders are named ``BIx{scale}``, ``BDx{scale}``).
        cache: shared cache of decoded frames.

    Raises:
        DatasetError: ``GT`` missing, or an LR tree that lacks a clip or has another number of frames.
    """
    if degradation not in DEGRADATION_KINDS:
        raise ValueError(f"degradation must be one of {', '.join(DEGRADATION_KINDS)}, got {degradation!r}")
    root = Path(root)
    gt = require_dir(root / "GT", "Vid4 layout: GT/<clip>/*.png, with BIx4/<clip>/ or BDx4/<clip>/ beside it")
    hr = [FrameFolderClip(folder, cache=cache) for folder in clip_folders(gt)]
    lr_root = root / f"{degradation.upper()}x{scale}"
    if not lr_root.is_dir():
        return VideoSet("vid4", list(hr), scale=scale)
    return VideoSet("vid4", list(hr), paired_lr_folders(hr, lr_root, cache), lr_root, scale)
