"""TensorBoard event files beside ``log.csv``: ``tensorboard --logdir OUTPUT/tensorboard``.

Scalars: ``train/loss`` and ``train/lr`` per step, ``val/<metric>`` per validation (PSNR/SSIM, RGB and Y,
and the bicubic baseline). Written with ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard``
extra: ``pip install 'vsrblocks[tensorboard]'``). A resumed run purges the events after its step, so a
run interrupted after its last checkpoint does not leave a doubled curve.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["TensorBoardLog"]


class TensorBoardLog:
    """Scalars of one training run in ``log_dir``.

    Args:
        log_dir: the folder of the event files.
        start_step: the step the run starts (or resumes) at; events of later steps already there are purged.

    Raises:
        ValueError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | Path, start_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ValueError(
                "--tensorboard needs the tensorboard package: pip install 'vsrblocks[tensorboard]'"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step or None)

    def step(self, step: int, loss: float, lr: float) -> None:
        """The training loss and learning rate of ``step``."""
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def validation(self, step: int, result: Mapping[str, float]) -> None:
        """The validation scores after ``step`` steps."""
        for key, value in result.items():
            self.writer.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
