"""Learning-rate schedules and training stages, as pure functions of the step.

A schedule answers, for every step, the learning rate and the :class:`Stage` (which parameters train, on
which loss). Because nothing else is stored, a resumed run gets exactly the learning rates an unbroken
run would, and the checkpoint only needs the step and :meth:`Schedule.state_dict` (the configuration).

- ``"constant"``: one stage, constant learning rate.
- ``"cosine"``: cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017), as VSR-Transformer
  trains (lr 2e-4 down to 1e-7): ``cycles`` equal periods, each from ``lr`` down to ``eta_min``; ``cycles=1``
  is plain cosine annealing.
- ``"mana-3stage"``: MANA's recipe (Yu et al. 2022, section 3.4): stage 1 trains everything but the memory
  module on the pixel loss (90k iterations at 1e-4), stage 2 only the memory module on the memory loss
  (30k at 1e-4), stage 3 everything on the pixel loss (30k at 1e-5). ``fractions`` split the run in the
  paper's 3 : 1 : 1 proportion by default.

Resuming with another ``--steps`` (:func:`extend_schedule`): a cosine schedule keeps its learning rates up
to the resume step and then anneals smoothly from the rate it had reached down to ``eta_min`` at the new
last step (no restart, no jump); a constant schedule stays constant; MANA's stages cannot be moved under a
running stage, so that is refused.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Stage",
    "Schedule",
    "ConstantSchedule",
    "CosineRestartSchedule",
    "ManaThreeStageSchedule",
    "ExtendedSchedule",
    "extend_schedule",
    "make_schedule",
    "memory_parameter_names",
    "SCHEDULES",
]

SCHEDULES = ("cosine", "constant", "mana-3stage")


@dataclass(frozen=True)
class Stage:
    """A training stage.

    Attributes:
        name: shown in the progress bar and the log.
        trainable: ``"all"``, ``"all-but-memory"`` or ``"memory"`` (see :func:`memory_parameter_names`).
        loss: ``"pixel"`` (the configured reconstruction loss on the output) or ``"memory"`` (the model's
            ``last_memory_loss``).
    """

    name: str = "train"
    trainable: Literal["all", "all-but-memory", "memory"] = "all"
    loss: Literal["pixel", "memory"] = "pixel"


class Schedule(ABC):
    """The learning rate and the stage at every step ``0 <= step < total_steps``."""

    name: str
    total_steps: int

    @abstractmethod
    def lr(self, step: int) -> float:
        """The learning rate at ``step``."""

    def stage(self, step: int) -> Stage:
        return Stage()

    def stage_index(self, step: int) -> int:
        return 0

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The configuration (plain types): ``make_schedule(**state_dict)`` rebuilds the schedule."""


class ConstantSchedule(Schedule):
    """Constant learning rate ``lr``, one stage training everything."""

    name = "constant"

    def __init__(self, total_steps: int, lr: float) -> None:
        self.total_steps, self.base_lr = total_steps, lr

    def lr(self, step: int) -> float:
        return self.base_lr

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "total_steps": self.total_steps, "lr": self.base_lr}


class CosineRestartSchedule(Schedule):
    """Cosine annealing from ``lr`` to ``eta_min`` over ``cycles`` equal periods, restarting at each.

    Examples:
        >>> s = CosineRestartSchedule(total_steps=100, lr=2e-4, cycles=2, eta_min=1e-7)
        >>> s.lr(0), round(s.lr(25), 8), s.lr(50)
        (0.0002, 0.00010005, 0.0002)
    """

    name = "cosine"

    def __init__(self, total_steps: int, lr: float, cycles: int = 1, eta_min: float = 1e-7) -> None:
        if cycles < 1:
            raise ValueError(f"cycles must be >= 1, got {cycles}")
        self.total_steps, self.base_lr, self.cycles, self.eta_min = total_steps, lr, cycles, eta_min
        self.period = max(1, math.ceil(total_steps / cycles))

    def lr(self, step: int) -> float:
        t = (step % self.period) / self.period
        return self.eta_min + 0.5 * (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t))

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "lr": self.base_lr,
            "cycles": self.cycles,
            "eta_min": self.eta_min,
        }


class ManaThreeStageSchedule(Schedule):
    """MANA's three stages, each at a constant learning rate.

    Args:
        total_steps: the whole run.
        lrs: learning rate of stages 1, 2, 3 (paper: 1e-4, 1e-4, 1e-5).
        fractions: share of ``total_steps`` per stage (paper: 90k, 30k, 30k iterations, i.e. 3 : 1 : 1).

    Examples:
        >>> s = ManaThreeStageSchedule(total_steps=150)
        >>> [s.stage(k).trainable for k in (0, 89, 90, 119, 120, 149)]
        ['all-but-memory', 'all-but-memory', 'memory', 'memory', 'all', 'all']
        >>> s.lr(0), s.lr(120)
        (0.0001, 1e-05)
    """

    name = "mana-3stage"
    STAGES = (
        Stage("stage1", "all-but-memory", "pixel"),
        Stage("stage2-memory", "memory", "memory"),
        Stage("stage3", "all", "pixel"),
    )

    def __init__(
        self, total_steps: int, lrs: Sequence[float] = (1e-4, 1e-4, 1e-5), fractions: Sequence[float] = (0.6, 0.2, 0.2)
    ) -> None:
        if len(lrs) != 3 or len(fractions) != 3:
            raise ValueError(
                f"mana-3stage needs 3 learning rates and 3 fractions, got {list(lrs)} and {list(fractions)}"
            )
        if any(f < 0 for f in fractions) or sum(fractions) <= 0:
            raise ValueError(f"stage fractions must be >= 0 with a positive sum, got {list(fractions)}")
        self.total_steps, self.lrs, self.fractions = total_steps, [float(x) for x in lrs], [float(f) for f in fractions]
        total = sum(self.fractions)
        first = round(total_steps * self.fractions[0] / total)
        second = round(total_steps * (self.fractions[0] + self.fractions[1]) / total)
        self.boundaries = (first, second)

    def stage_index(self, step: int) -> int:
        return 0 if step < self.boundaries[0] else 1 if step < self.boundaries[1] else 2

    def stage(self, step: int) -> Stage:
        return self.STAGES[self.stage_index(step)]

    def lr(self, step: int) -> float:
        return self.lrs[self.stage_index(step)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "lrs": list(self.lrs),
            "fractions": list(self.fractions),
        }


class ExtendedSchedule(Schedule):
    """``head`` up to ``switch_step``, then a cosine from ``head.lr(switch_step)`` to ``eta_min`` at ``total_steps``.

    What a cosine run resumed at ``switch_step`` with a new ``--steps`` follows: the learning rate is
    continuous at the switch (the issue this fixes: a fresh cosine over the new total jumped 35x there).

    Examples:
        >>> s = ExtendedSchedule(CosineRestartSchedule(100, lr=2e-4, eta_min=0.0), switch_step=90, total_steps=200, eta_min=0.0)
        >>> round(s.lr(89), 9) == round(CosineRestartSchedule(100, lr=2e-4, eta_min=0.0).lr(89), 9), s.lr(90) == s.head.lr(90), s.lr(200)
        (True, True, 0.0)
    """

    name = "extended"

    def __init__(self, head: Schedule, switch_step: int, total_steps: int, eta_min: float = 1e-7) -> None:
        if not 0 <= switch_step < total_steps:
            raise ValueError(f"the run is at step {switch_step}: --steps must be larger than that, got {total_steps}")
        self.head, self.switch_step, self.total_steps, self.eta_min = head, switch_step, total_steps, eta_min
        self.start_lr = head.lr(switch_step)

    def lr(self, step: int) -> float:
        if step < self.switch_step:
            return self.head.lr(step)
        t = (step - self.switch_step) / (self.total_steps - self.switch_step)
        return self.eta_min + 0.5 * (self.start_lr - self.eta_min) * (1 + math.cos(math.pi * t))

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "head": self.head.state_dict(),
            "switch_step": self.switch_step,
            "eta_min": self.eta_min,
        }


def extend_schedule(schedule: Schedule, step: int, total_steps: int) -> Schedule:
    """The schedule a run at ``step`` follows when resumed with ``total_steps`` instead of ``schedule.total_steps``.

    Raises:
        ValueError: ``total_steps <= step``, or a ``mana-3stage`` schedule (its stage boundaries are fractions of
            the original ``--steps``).
    """
    if total_steps == schedule.total_steps:
        return schedule
    if total_steps <= step:
        raise ValueError(f"the checkpoint is at step {step}: --steps must be larger than that, got {total_steps}")
    if isinstance(schedule, ConstantSchedule):
        return ConstantSchedule(total_steps, schedule.base_lr)
    if isinstance(schedule, ManaThreeStageSchedule):
        raise ValueError(
            f"mana-3stage cannot change --steps on resume ({schedule.total_steps} -> {total_steps}): its stage boundaries "
            f"are fractions of the run; resume with --steps {schedule.total_steps}, or start a new run with --weights"
        )
    eta_min = getattr(schedule, "eta_min", 1e-7)
    return ExtendedSchedule(schedule, step, total_steps, eta_min)


def make_schedule(name: str, total_steps: int, lr: float | None = None, **options: Any) -> Schedule:
    """Build schedule ``name`` (one of :data:`SCHEDULES`) for a run of ``total_steps``.

    ``lr`` is the peak (``"cosine"``) or constant (``"constant"``) learning rate; ``"mana-3stage"`` takes
    ``lrs`` and ``fractions`` instead (an ``lr`` given there scales the paper's (1e-4, 1e-4, 1e-5) to
    ``(lr, lr, lr / 10)``).

    Raises:
        ValueError: unknown name.
    """
    if name == "constant":
        return ConstantSchedule(total_steps, 1e-4 if lr is None else lr)
    if name == "cosine":
        return CosineRestartSchedule(total_steps, 2e-4 if lr is None else lr, **options)
    if name == "extended":
        head = options.pop("head")
        return ExtendedSchedule(make_schedule(**head), total_steps=total_steps, **options)
    if name == "mana-3stage":
        if lr is not None and "lrs" not in options:
            options["lrs"] = (lr, lr, lr / 10)
        return ManaThreeStageSchedule(total_steps, **options)
    raise ValueError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")


def memory_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the memory module's parameters: those of every
    :class:`~vsrblocks.attention.MemoryAugmentedAttention` inside ``model`` (MANA: the bank ``mb`` and its
    output projection ``W_z1``), or what a ``memory_parameters()`` method of the model returns.

    Examples:
        >>> from reference_models import create_model
        >>> sorted(memory_parameter_names(create_model("mana", "tiny")))
        ['attention.memory.W_z1.bias', 'attention.memory.W_z1.weight', 'attention.memory.mb']
    """
    from vsrblocks.attention.memory import MemoryAugmentedAttention

    method = getattr(model, "memory_parameters", None)
    if method is not None:
        by_id = {id(p): name for name, p in model.named_parameters()}
        chosen = [by_id.get(id(p)) for p in method()]
        if None in chosen:
            raise ValueError("memory_parameters() returned a tensor that is not a parameter of the model")
        return set(chosen)  # type: ignore[arg-type]
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, MemoryAugmentedAttention):
            names.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters())
    return names
