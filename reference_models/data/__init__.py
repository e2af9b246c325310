"""Training and evaluation data: clips on disk, the standard VSR datasets as distributed, and LR degradations.

>>> from reference_models.data import TrainClips, ValClips, load_clips, open_dataset, degrade
"""

from reference_models.data.catalog import EVAL_DATASETS, TRAIN_DATASETS, open_dataset
from reference_models.data.dataset import (
    Clip,
    FrameCache,
    FrameFolderClip,
    FrameListClip,
    TensorClip,
    TrainClips,
    ValClips,
    VideoFileClip,
    check_lr_pairs,
    load_clips,
)
from reference_models.data.dataset_error import DatasetError
from reference_models.data.degradation import (
    DEGRADATIONS,
    bicubic_downsample,
    bicubic_upsample,
    blur_downsample,
    blur_radius,
    degrade,
    gaussian_blur,
)
from reference_models.data.folder import folder
from reference_models.data.reds import REDS4_CLIPS, reds
from reference_models.data.video_set import DEGRADATION_KINDS, VideoSet
from reference_models.data.vid4 import vid4
from reference_models.data.vimeo90k import vimeo90k

__all__ = [
    "DEGRADATIONS",
    "DEGRADATION_KINDS",
    "EVAL_DATASETS",
    "REDS4_CLIPS",
    "TRAIN_DATASETS",
    "Clip",
    "DatasetError",
    "FrameCache",
    "FrameFolderClip",
    "FrameListClip",
    "TensorClip",
    "TrainClips",
    "ValClips",
    "VideoFileClip",
    "VideoSet",
    "bicubic_downsample",
    "bicubic_upsample",
    "blur_downsample",
    "blur_radius",
    "check_lr_pairs",
    "degrade",
    "folder",
    "gaussian_blur",
    "load_clips",
    "open_dataset",
    "reds",
    "vid4",
    "vimeo90k",
]
