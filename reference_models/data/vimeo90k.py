"""Vimeo-90K septuplets as distributed: ``ROOT/sequences/<a>/<b>/im1.png .. im7.png`` listed in
``ROOT/sep_trainlist.txt`` and ``ROOT/sep_testlist.txt`` (Vimeo-90K-T), and the LR tree when given:
``ROOT/BIx4/<a>/<b>/`` or ``ROOT/BDx4/<a>/<b>/`` (the names MMagic's preparation script writes)."""

from __future__ import annotations

from pathlib import Path

from reference_models.data.dataset import Clip, FrameCache, FrameListClip
from reference_models.data.dataset_error import DatasetError
from reference_models.data.video_set import DEGRADATION_KINDS, VideoSet, require_dir

__all__ = ["VIMEO_LISTS", "vimeo90k"]

VIMEO_LISTS = {"train": "sep_trainlist.txt", "test": "sep_testlist.txt"}
_FRAMES = tuple(f"im{i}.png" for i in range(1, 8))


def _septuplets(tree: Path, entries: list[str], what: str, cache: FrameCache | None) -> list[Clip]:
    clips: list[Clip] = []
    for entry in entries:
        folder = tree / entry
        if not folder.is_dir():
            raise DatasetError(f"'{folder}' is missing: {what} septuplet {entry!r}")
        clips.append(FrameListClip([folder / f for f in _FRAMES], entry, cache))
    return clips


def vimeo90k(
    root: str | Path, split: str = "test", degradation: str = "bi", scale: int = 4, cache: FrameCache | None = None
) -> VideoSet:
    """The septuplets of ``split`` (``"train"`` or ``"test"``), clips of 7 frames named ``"<a>/<b>"``.

    Vimeo-90K-T is scored on the centre frame ``im4`` of each septuplet (EDVR's convention): the returned
    set says so with ``centre_only``.

    Raises:
        DatasetError: the list or ``sequences`` missing, or a septuplet the list names absent from a tree.
    """
    if split not in VIMEO_LISTS:
        raise ValueError(f"Vimeo-90K split must be one of {', '.join(VIMEO_LISTS)}, got {split!r}")
    if degradation not in DEGRADATION_KINDS:
        raise ValueError(f"degradation must be one of {', '.join(DEGRADATION_KINDS)}, got {degradation!r}")
    root = Path(root)
    listing = root / VIMEO_LISTS[split]
    if not listing.is_file():
        raise DatasetError(f"'{listing}' is missing (Vimeo-90K layout: sequences/<a>/<b>/im1..im7.png and the lists)")
    entries = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not entries:
        raise DatasetError(f"'{listing}' lists no septuplet")
    tree = require_dir(root / "sequences", "Vimeo-90K layout: sequences/<a>/<b>/im1..im7.png")
    hr = _septuplets(tree, entries, "GT", cache)
    name = "vimeo90k-t" if split == "test" else "vimeo90k"
    lr_root = root / f"{degradation.upper()}x{scale}"
    if not lr_root.is_dir():
        return VideoSet(name, hr, scale=scale, centre_only=split == "test")
    lr = _septuplets(lr_root, entries, "LR", cache)
    return VideoSet(name, hr, lr, lr_root, scale, centre_only=split == "test")
