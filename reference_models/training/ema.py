"""Exponential moving average of the weights, as BasicSR keeps it (``params_ema`` in its checkpoints).

After every optimiser step ``ema = decay * ema + (1 - decay) * weights`` (the first update copies the
weights); buffers are copied, not averaged. The average is built on ``torch.optim.swa_utils.AveragedModel``
with ``get_ema_multi_avg_fn``. The trainer validates the averaged copy, saves it under ``params_ema`` and
restores it on resume; ``run`` and export read ``params_ema`` when a checkpoint has it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightEMA"]


class WeightEMA:
    """An averaged copy of ``model``'s weights.

    Args:
        model: the model being trained (its current weights start the average).
        decay: weight of the old average per step, in ``[0, 1)`` (BasicSR: 0.999).

    Examples:
        >>> net = nn.Linear(2, 1)
        >>> ema = WeightEMA(net, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> ema.update(net); ema.update(net)
        >>> bool(torch.allclose(ema.module.weight, torch.ones(1, 2)))
        True
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema: the decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        self._averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class as the trained one), for validation and saving."""
        return self._averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average; copy its buffers."""
        self._averaged.update_parameters(model)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, in the model's key names (what goes under ``params_ema``)."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def training_state(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": int(self._averaged.n_averaged)}

    def load(self, params_ema: dict[str, torch.Tensor], training_state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` and :meth:`training_state` saved."""
        self.module.load_state_dict(params_ema)
        self._averaged.n_averaged.fill_(int(training_state.get("updates", 1)))
