"""Training and evaluation data: clips on disk, the datasets built from them, and LR degradations.

>>> from reference_models.data import TrainClips, ValClips, load_clips, degrade
"""

from reference_models.data.dataset import Clip, FrameFolderClip, TensorClip, TrainClips, ValClips, VideoFileClip, load_clips
from reference_models.data.degradation import DEGRADATIONS, bicubic_downsample, bicubic_upsample, blur_downsample, degrade, gaussian_blur

__all__ = [
    "DEGRADATIONS",
    "Clip",
    "FrameFolderClip",
    "TensorClip",
    "TrainClips",
    "ValClips",
    "VideoFileClip",
    "bicubic_downsample",
    "bicubic_upsample",
    "blur_downsample",
    "degrade",
    "gaussian_blur",
    "load_clips",
]
