"""A video dataset as read from disk: its HR clips and, when the dataset provides them, the paired LR clips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reference_models.data.dataset import Clip, FrameCache, FrameFolderClip, check_lr_pairs
from reference_models.data.dataset_error import DatasetError
from reference_models.io.video import IMAGE_EXTENSIONS, natural_key

__all__ = ["DEGRADATION_KINDS", "VideoSet", "clip_folders", "paired_lr_folders", "require_dir"]

#: The literature's names of the two degradations and :func:`reference_models.data.degrade`'s names for them.
DEGRADATION_KINDS = {"bi": "bicubic", "bd": "blur"}


@dataclass
class VideoSet:
    """HR clips of a dataset split, and the LR clips its distribution provides (``None``: make them with a
    degradation).

    Attributes:
        name: the split, as the command line names it (``"vid4"``, ``"reds4"``, ``"vimeo90k-t"`` ...).
        hr: the ground-truth clips.
        lr: the provided LR clips, paired one to one with ``hr`` (checked: frames and ``1 / scale`` size).
        lr_root: where the provided LR clips lie.
        scale: the factor between HR and provided LR frames.
        centre_only: the published protocol scores only each clip's centre frame (Vimeo-90K-T's ``im4``).
    """

    name: str
    hr: list[Clip]
    lr: list[Clip] | None = None
    lr_root: Path | None = None
    scale: int = 4
    centre_only: bool = False

    def __post_init__(self) -> None:
        if not self.hr:
            raise DatasetError(f"{self.name}: no clips")
        if self.lr is not None:
            check_lr_pairs(self.hr, self.lr, self.scale)

    def describe_lr(self, degradation: str) -> str:
        """One line for the log: which LR frames are used, provided or generated with ``degradation`` (bi|bd)."""
        if self.lr is not None:
            return f"LR frames: provided, {self.lr_root}"
        how = "MATLAB bicubic" if degradation == "bi" else f"Gaussian blur sigma 1.6, every {self.scale}th pixel"
        return f"LR frames: generated from the HR frames with {degradation.upper()} ({how}, x{self.scale})"


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DatasetError` saying what was expected there."""
    if not path.is_dir():
        raise DatasetError(f"'{path}' is missing ({what})")
    return path


def clip_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold images, in natural order."""
    folders = [
        entry
        for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name))
        if entry.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entry.iterdir())
    ]
    if not folders:
        raise DatasetError(f"no clip folders of frames in '{root}'")
    return folders


def paired_lr_folders(hr_clips: Sequence[FrameFolderClip], lr_root: Path, cache: FrameCache | None) -> list[Clip]:
    """The LR clip ``lr_root/<name>`` of every HR clip, with as many frames (else a :class:`DatasetError`)."""
    lr_clips: list[Clip] = []
    for clip in hr_clips:
        folder = lr_root / clip.name
        if not folder.is_dir():
            raise DatasetError(f"'{folder}' is missing: no LR frames for clip {clip.name!r}")
        lr = FrameFolderClip(folder, cache=cache)
        if len(lr) != len(clip):
            raise DatasetError(
                f"clip {clip.name!r}: {len(clip)} GT frames in '{clip.paths[0].parent}' but {len(lr)} LR frames in '{folder}'"
            )
        lr_clips.append(lr)
    return lr_clips
