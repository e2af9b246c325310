"""Training the reference models: data, degradations, schedules and the training loop.

>>> from reference_models.training import TrainClips, TrainConfig, Trainer, load_clips

The names are imported on first use (PEP 562), so ``reference_models.cli.train`` can parse its
arguments (and answer ``--help``) before torch is imported.
"""

from __future__ import annotations

from reference_models.lazy_exports import lazy_exports

_SOURCES = {
    "reference_models.data.dataset": (
        "Clip",
        "FrameFolderClip",
        "TensorClip",
        "TrainClips",
        "ValClips",
        "VideoFileClip",
        "load_clips",
    ),
    "reference_models.data.degradation": (
        "bicubic_downsample",
        "bicubic_upsample",
        "blur_downsample",
        "degrade",
        "gaussian_blur",
    ),
    "reference_models.training.plot": ("plot_curves",),
    "reference_models.training.schedule": (
        "ConstantSchedule",
        "CosineRestartSchedule",
        "ExtendedSchedule",
        "ManaThreeStageSchedule",
        "Schedule",
        "Stage",
        "extend_schedule",
        "make_schedule",
        "memory_parameter_names",
    ),
    "reference_models.training.trainer": (
        "NonFiniteLossError",
        "PAPER_RECIPES",
        "TrainConfig",
        "Trainer",
        "add_aux_losses",
        "frame_scores",
        "remove_stale_partials",
        "seed_everything",
    ),
    "reference_models.training.ema": ("WeightEMA",),
    "reference_models.training.tensorboard_log": ("TensorBoardLog",),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
