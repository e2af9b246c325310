"""The datasets the command line names: ``train --dataset`` and ``evaluate --dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the readers import torch; `train --help` and `evaluate --help` only need the names below
    from reference_models.data.video_set import VideoSet

__all__ = ["EVAL_DATASETS", "TRAIN_DATASETS", "open_dataset"]

#: Training sets: REDS without REDS4, Vimeo-90K's training list, Vid4, a plain folder.
TRAIN_DATASETS = ("reds", "vimeo90k", "vid4", "folder")
#: Test sets of the published tables, and a plain folder.
EVAL_DATASETS = ("vid4", "reds4", "vimeo90k-t", "folder")


def open_dataset(
    name: str, root: str | Path, degradation: str = "bi", scale: int = 4, cache_bytes: int = 2 << 30
) -> VideoSet:
    """The dataset ``name`` (one of :data:`TRAIN_DATASETS` or :data:`EVAL_DATASETS`) under ``root``.

    Args:
        name: ``vid4``, ``reds`` (train split), ``reds4``, ``vimeo90k`` (train list), ``vimeo90k-t`` or ``folder``.
        root: the dataset's folder, laid out as distributed (see the modules of each dataset).
        degradation: ``bi`` or ``bd``: which provided LR tree to use, if the dataset has one.
        scale: the super-resolution factor.
        cache_bytes: memory for decoded frames, shared by all clips (0: no caching).

    Raises:
        DatasetError: a missing or inconsistent part of the layout, named in the message.
    """
    from reference_models.data.dataset import FrameCache
    from reference_models.data.folder import folder
    from reference_models.data.reds import reds
    from reference_models.data.vid4 import vid4
    from reference_models.data.vimeo90k import vimeo90k

    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset folder '{root}' does not exist")
    cache = FrameCache(cache_bytes) if cache_bytes else None
    if name == "vid4":
        return vid4(root, degradation, scale, cache)
    if name in ("reds", "reds4"):
        return reds(root, "train" if name == "reds" else "reds4", degradation, scale, cache=cache)
    if name in ("vimeo90k", "vimeo90k-t"):
        return vimeo90k(root, "train" if name == "vimeo90k" else "test", degradation, scale, cache)
    if name == "folder":
        return folder(root, scale, cache_bytes)
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(dict.fromkeys(TRAIN_DATASETS + EVAL_DATASETS))}")
