"""Training and evaluation data: clips on disk, the standard VSR datasets as distributed, and LR degradations.

>>> from reference_models.data import TrainClips, ValClips, load_clips, open_dataset, degrade
"""

from __future__ import annotations

from reference_models.lazy_exports import lazy_exports

# Imported on first access: `train --help` and `evaluate --help` read the dataset names without importing torch.
_EXPORTS = {
    "Clip": "reference_models.data.dataset",
    "DEGRADATIONS": "reference_models.data.degradation",
    "DEGRADATION_KINDS": "reference_models.data.video_set",
    "DatasetError": "reference_models.data.dataset_error",
    "EVAL_DATASETS": "reference_models.data.catalog",
    "FrameCache": "reference_models.data.dataset",
    "FrameFolderClip": "reference_models.data.dataset",
    "FrameListClip": "reference_models.data.dataset",
    "REDS4_CLIPS": "reference_models.data.reds",
    "TRAIN_DATASETS": "reference_models.data.catalog",
    "TensorClip": "reference_models.data.dataset",
    "TrainClips": "reference_models.data.dataset",
    "ValClips": "reference_models.data.dataset",
    "VideoFileClip": "reference_models.data.dataset",
    "VideoSet": "reference_models.data.video_set",
    "bicubic_downsample": "reference_models.data.degradation",
    "bicubic_upsample": "reference_models.data.degradation",
    "blur_downsample": "reference_models.data.degradation",
    "blur_radius": "reference_models.data.degradation",
    "check_lr_pairs": "reference_models.data.dataset",
    "degrade": "reference_models.data.degradation",
    "folder": "reference_models.data.folder",
    "gaussian_blur": "reference_models.data.degradation",
    "load_clips": "reference_models.data.dataset",
    "open_dataset": "reference_models.data.catalog",
    "reds": "reference_models.data.reds",
    "vid4": "reference_models.data.vid4",
    "vimeo90k": "reference_models.data.vimeo90k",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
