"""REDS as distributed for NTIRE 2019: ``train_sharp/<clip>/`` with ``train_sharp_bicubic/X4/<clip>/``, and
``val_sharp`` likewise. REDS4 (clips 000, 011, 015, 020 of ``train_sharp``) is the test split of EDVR, BasicVSR
and MANA; BasicSR's meta files leave it out of training, and so does :func:`reds` by default."""

from __future__ import annotations

from pathlib import Path

from reference_models.data.dataset import FrameCache, FrameFolderClip
from reference_models.data.dataset_error import DatasetError
from reference_models.data.video_set import DEGRADATION_KINDS, VideoSet, clip_folders, paired_lr_folders, require_dir

__all__ = ["REDS4_CLIPS", "REDS_SPLITS", "reds"]

REDS4_CLIPS = ("000", "011", "015", "020")
#: split -> (HR folder, name of the split in messages and logs)
REDS_SPLITS = {"train": ("train_sharp", "reds"), "reds4": ("train_sharp", "reds4"), "val": ("val_sharp", "reds-val")}


def reds(
    root: str | Path,
    split: str = "train",
    degradation: str = "bi",
    scale: int = 4,
    include_reds4: bool = False,
    cache: FrameCache | None = None,
) -> VideoSet:
    """REDS clips under ``root``.

    Args:
        root: the folder holding ``train_sharp/`` (and ``train_sharp_bicubic/``, ``val_sharp/`` ...).
        split: ``"train"`` (``train_sharp`` without REDS4 unless ``include_reds4``), ``"reds4"`` (the four test
            clips) or ``"val"`` (``val_sharp``).
        degradation: ``"bi"`` uses the provided ``*_bicubic/X4`` frames when present; ``"bd"`` has none provided.
        scale: the factor (``X{scale}``).
        include_reds4: train on the REDS4 clips too.
        cache: shared cache of decoded frames.

    Raises:
        DatasetError: a missing folder, a missing REDS4 clip, or LR frames that do not pair with the HR ones.
    """
    if split not in REDS_SPLITS:
        raise ValueError(f"REDS split must be one of {', '.join(REDS_SPLITS)}, got {split!r}")
    if degradation not in DEGRADATION_KINDS:
        raise ValueError(f"degradation must be one of {', '.join(DEGRADATION_KINDS)}, got {degradation!r}")
    folder, name = REDS_SPLITS[split]
    root = Path(root)
    hr_root = require_dir(root / folder, f"REDS layout: {folder}/<clip>/*.png with {folder}_bicubic/X{scale}/<clip>/")
    folders = clip_folders(hr_root)
    if split == "reds4":
        found = {f.name: f for f in folders}
        missing = [c for c in REDS4_CLIPS if c not in found]
        if missing:
            raise DatasetError(f"REDS4 clip(s) {', '.join(missing)} missing in '{hr_root}'")
        folders = [found[c] for c in REDS4_CLIPS]
    elif split == "train" and not include_reds4:
        folders = [f for f in folders if f.name not in REDS4_CLIPS]
    hr = [FrameFolderClip(f, cache=cache) for f in folders]
    lr_root = root / f"{folder}_bicubic" / f"X{scale}"
    if degradation != "bi" or not lr_root.is_dir():
        return VideoSet(name, list(hr), scale=scale)
    return VideoSet(name, list(hr), paired_lr_folders(hr, lr_root, cache), lr_root, scale)
