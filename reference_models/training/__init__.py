"""Training the reference models: data, degradations, schedules and the training loop.

>>> from reference_models.training import TrainClips, TrainConfig, Trainer, load_clips
"""

from reference_models.data.dataset import Clip, FrameFolderClip, TensorClip, TrainClips, ValClips, VideoFileClip, load_clips
from reference_models.data.degradation import bicubic_downsample, bicubic_upsample, blur_downsample, degrade, gaussian_blur
from reference_models.training.plot import plot_curves
from reference_models.training.schedule import (
    ConstantSchedule,
    CosineRestartSchedule,
    ManaThreeStageSchedule,
    Schedule,
    Stage,
    make_schedule,
    memory_parameter_names,
)
from reference_models.training.trainer import PAPER_RECIPES, TrainConfig, Trainer, add_aux_losses, frame_scores

__all__ = [
    "Clip",
    "ConstantSchedule",
    "CosineRestartSchedule",
    "FrameFolderClip",
    "ManaThreeStageSchedule",
    "PAPER_RECIPES",
    "Schedule",
    "Stage",
    "TensorClip",
    "TrainClips",
    "TrainConfig",
    "Trainer",
    "ValClips",
    "VideoFileClip",
    "add_aux_losses",
    "bicubic_downsample",
    "bicubic_upsample",
    "blur_downsample",
    "degrade",
    "frame_scores",
    "gaussian_blur",
    "load_clips",
    "make_schedule",
    "memory_parameter_names",
    "plot_curves",
]
