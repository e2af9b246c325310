"""The training loop: Adam, a step-indexed schedule, AMP, clipping, validation, checkpoints and logs.

:class:`Trainer` trains any model that maps ``(B, T, 3, h, w)`` LR clips to the centre HR frame
(``output_mode="center"``) or to every HR frame (``output_mode="all"``). Every quantity of step ``k`` is a
function of the state saved in a checkpoint: the model, Adam's moments, the AMP scaler, the RNG states and
``k`` itself (the learning rate and stage come from the schedule, the batch from the dataset indices
``k * batch_size ...``), so :meth:`Trainer.load_checkpoint` continues a run exactly where it stopped.

Under ``torchrun`` (a process group initialised, see :mod:`~reference_models.training.distributed`) the
model is wrapped in ``DistributedDataParallel``; ``batch_size`` stays the global batch and rank ``r`` of
``W`` takes samples ``k * batch_size + r * batch_size / W ...`` of step ``k``, so the weights do not depend
on the number of processes (up to float summation order) and a run resumes exactly on any number of them.
Validation is split by clip over the ranks and the scores summed over them; only rank 0 writes files.

A non-finite loss or gradient stops the run (``on_nonfinite="stop"``, :class:`NonFiniteLossError`; the
last checkpoint written is the last good one) or skips that step's update (``"skip"``, counted in the log).
Checking it reads one flag back from the device per step.

Files written to ``config.output_dir``: ``last.pt`` and ``best.pt`` (best validation Y-PSNR) checkpoints,
``log.csv`` (one row per step; validation columns filled on validation steps), ``log.json`` (configuration,
the same rows, validation results, ``world_size``), ``curve.png`` (training loss and validation PSNR against
steps; needs matplotlib) and with ``tensorboard`` the event files in ``tensorboard/``. With ``ema`` the
checkpoints hold the moving average of the weights under ``params_ema`` (BasicSR's key), which validation
scores and ``run``/export load.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from reference_models.data.degradation import bicubic_upsample
from reference_models.io import partial_output
from reference_models.training import distributed
from reference_models.training.ema import WeightEMA
from reference_models.training.recipes import DEFAULT_RECIPE, LOSSES, NONFINITE_POLICIES, PAPER_RECIPES
from reference_models.training.schedule import (
    SCHEDULES,
    ExtendedSchedule,
    Schedule,
    extend_schedule,
    make_schedule,
    memory_parameter_names,
)
from vsrblocks.losses import CharbonnierLoss, L1Loss
from vsrblocks.metrics import psnr, ssim

__all__ = [
    "TrainConfig",
    "Trainer",
    "PAPER_RECIPES",
    "NonFiniteLossError",
    "frame_scores",
    "add_aux_losses",
    "seed_everything",
    "remove_stale_partials",
]

#: The files a run writes with :func:`reference_models.checkpoint.save_checkpoint` (temporary ``.NAME.partial-*``).
CHECKPOINT_NAMES = ("last.pt", "best.pt")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient of a step is NaN or infinite (``on_nonfinite="stop"``)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Attributes:
        steps: total optimiser steps.
        batch_size: clips per step.
        lr: peak learning rate; ``None``: the paper's (:data:`PAPER_RECIPES`).
        betas: Adam betas; ``None``: the paper's.
        loss: ``"charbonnier"`` (default) or ``"l1"``.
        aux_weight: weight of the model's auxiliary losses added to the pixel loss, for a model that exposes
            them in ``last_aux_losses`` (DASAA with ``aux_losses=True``: PASSRnet's 0.005).
        schedule: ``"cosine"`` (with ``cycles`` restarts, down to ``eta_min``), ``"constant"`` or ``"mana-3stage"``.
        cycles: cosine periods (restarts + 1).
        eta_min: the cosine schedule's floor.
        stage_fractions: share of the steps of MANA's three stages.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        amp: mixed precision (bfloat16 where supported, else float16 with a gradient scaler); ``None``: on for CUDA.
        compile: run the model through ``torch.compile`` (``True``: the default Inductor backend; a string names
            another backend, e.g. ``"aot_eager"``).
        val_every: validate every this many steps (and at the end); 0: only at the end.
        crop_border: pixels ignored on each side by PSNR/SSIM.
        checkpoint_every: write ``last.pt`` every this many steps (and at the end); 0: only at the end.
        log_every: refresh the progress bar and read losses back from the device every this many steps.
        seed: seeds the model's randomness (torch, numpy, python) at the start of a run (the command line
            also seeds before building the model, so its initial weights follow the seed).
        ema: decay of an exponential moving average of the weights (BasicSR: 0.999), validated and saved as
            ``params_ema``; ``None``: no average.
        on_nonfinite: ``"stop"`` (default): a NaN/inf loss or gradient raises :class:`NonFiniteLossError`;
            ``"skip"``: that step changes no weight and is counted in ``skipped_steps``.
        tensorboard: also write TensorBoard events to ``output_dir/tensorboard``.
        num_workers: ``DataLoader`` worker processes.
        device: ``"cpu"``, ``"cuda"``...; ``None``: CUDA when available.
        output_dir: where checkpoints and logs go.
        progress: show a tqdm progress bar.
    """

    steps: int = 10_000
    batch_size: int = 8
    lr: float | None = None
    betas: tuple[float, float] | None = None
    loss: Literal["charbonnier", "l1"] = "charbonnier"
    aux_weight: float = 0.005
    schedule: str = "cosine"
    cycles: int = 1
    eta_min: float = 1e-7
    stage_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    grad_clip: float | None = None
    amp: bool | None = None
    compile: bool | str = False
    val_every: int = 1000
    crop_border: int = 4
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    ema: float | None = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    tensorboard: bool = False
    num_workers: int = 0
    device: str | None = None
    output_dir: str = "runs/train"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; available: {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; available: {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"unknown on_nonfinite {self.on_nonfinite!r}; available: {', '.join(NONFINITE_POLICIES)}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema: the decay must be in [0, 1), got {self.ema}")
        if self.betas is not None:
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.stage_fractions = tuple(float(f) for f in self.stage_fractions)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), loadable with ``torch.load(weights_only=True)``."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class _StepSampler(Sampler[int]):
    """This rank's dataset indices of steps ``start_step ... stop_step - 1``: sample ``j`` of step ``k`` is
    index ``k * batch_size + j`` (wrapped at ``length``), and rank ``r`` of ``world`` takes the ``j`` in
    ``[r * b, (r + 1) * b)`` with ``b = batch_size // world``; resuming at step ``k`` continues the same stream."""

    def __init__(
        self, start_step: int, stop_step: int, batch_size: int, length: int, rank: int = 0, world: int = 1
    ) -> None:
        self.start_step, self.stop_step, self.batch_size, self.length = start_step, stop_step, batch_size, length
        self.local = batch_size // world
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[int]:
        for k in range(self.start_step, self.stop_step):
            first = k * self.batch_size + self.offset
            yield from (i % self.length for i in range(first, first + self.local))

    def __len__(self) -> int:
        return (self.stop_step - self.start_step) * self.local


class _Objective(nn.Module):
    """What one training forward pass produces for the loss: the model output and, when asked, the model's
    memory loss and auxiliary losses. ``DistributedDataParallel`` wraps this module, so every tensor a loss
    is taken from is among its outputs (DDP finds the parameters a stage does not use from them)."""

    _forward: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, model: nn.Module, forward: Any) -> None:
        super().__init__()
        self.model = model
        # The compiled forward shares the model's parameters; kept out of the module tree so they appear once.
        self.__dict__["_forward"] = forward

    def forward(self, clip: torch.Tensor, memory: bool = False) -> dict[str, Any]:
        out = self._forward(clip)
        result: dict[str, Any] = {"out": out}
        if memory:
            result["memory"] = self.model.last_memory_loss
        aux = getattr(self.model, "last_aux_losses", None)
        if aux is not None:
            result["aux"] = aux
        return result


def _rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain types (``weights_only``-loadable)."""
    np_state = cast(tuple[Any, ...], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss_next": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (torch's seeds CUDA too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def remove_stale_partials(folder: str | Path, names: tuple[str, ...] = CHECKPOINT_NAMES) -> list[Path]:
    """Delete the temporary files (``.NAME.partial-*``) that interrupted saves of ``names`` left in ``folder``
    (their writing process is gone); returns them."""
    return [path for name in names for path in partial_output.remove_stale_partials(Path(folder) / name)]


@dataclass
class _Row:
    step: int
    stage: str
    lr: float
    loss: float
    time: float
    val: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Train ``model`` on ``train_data``, validating on ``val_data``.

    Args:
        model: maps ``(B, T, 3, h, w)`` in ``[0, 1]`` to ``(B, 3, sh, sw)`` (``output_mode="center"``) or
            ``(B, T, 3, sh, sw)`` (``"all"``). ``num_frames`` and ``output_mode`` are read from it when present.
            For ``schedule="mana-3stage"`` it must expose ``last_memory_loss`` after a forward pass. If it
            exposes a ``last_aux_losses`` dict after a training forward pass (DASAA with ``aux_losses=True``),
            the pixel loss gains ``config.aux_weight`` times their sum (:func:`add_aux_losses`).
        train_data: a map-style dataset whose item ``i`` is ``{"lr": (T, 3, h, w), "hr": (T, 3, sh, sw)}``, e.g.
            :class:`~reference_models.training.TrainClips`; step ``k`` uses items ``k * batch_size`` onwards.
        config: the run's :class:`TrainConfig`.
        val_data: a dataset of the same items (whole frames, e.g. :class:`~reference_models.training.ValClips`),
            scored on the centre frame ``T // 2``; ``None``: no validation.
        metadata: plain values saved with every checkpoint (the command line keeps its data options there).

    Examples:
        >>> from reference_models.training import TensorClip, TrainClips
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, 48, 3, padding=1)
        ...     def forward(self, clip):
        ...         return nn.functional.pixel_shuffle(self.conv(clip[:, 1]), 4)
        >>> data = TrainClips([TensorClip(torch.rand(3, 3, 32, 32))], num_frames=3, patch_size=4)
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> trainer = Trainer(Net(), data, TrainConfig(steps=3, batch_size=2, output_dir=out, progress=False))
        >>> len(trainer.fit())
        3
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        config: TrainConfig,
        val_data: Dataset | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.metadata = dict(metadata or {})
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if config.batch_size % self.world_size:
            raise ValueError(
                f"--batch-size {config.batch_size} (the global batch) must be a multiple of the {self.world_size} processes"
            )
        device = distributed.local_device(config.device) if self.world_size > 1 else config.device
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        spec = getattr(model, "model_spec", None) or {}
        recipe = PAPER_RECIPES.get(spec.get("name", ""), DEFAULT_RECIPE)
        self.lr = recipe["lr"] if config.lr is None else config.lr
        self.betas = tuple(recipe["betas"] if config.betas is None else config.betas)
        self.output_mode = getattr(model, "output_mode", "center")
        self.scale = getattr(model, "scale", 4)

        options: dict[str, Any] = {}
        if config.schedule == "cosine":
            options = {"cycles": config.cycles, "eta_min": config.eta_min}
        elif config.schedule == "mana-3stage":
            options = {"fractions": config.stage_fractions}
        self.schedule: Schedule = make_schedule(config.schedule, config.steps, self.lr, **options)
        self.memory_names = memory_parameter_names(model)
        if config.schedule == "mana-3stage" and not self.memory_names:
            raise ValueError("schedule 'mana-3stage' needs a model with a memory module (MANA)")

        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=self.betas)
        self.criterion: nn.Module = CharbonnierLoss() if config.loss == "charbonnier" else L1Loss()
        use_amp = config.amp if config.amp is not None else self.device.type == "cuda"
        self.amp_dtype: torch.dtype | None = None
        if use_amp:
            bf16 = self.device.type != "cuda" or torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        backend = config.compile if isinstance(config.compile, str) else "inductor"
        # torch.compile of a module returns a module (OptimizedModule)
        self.forward_model = (
            cast(nn.Module, torch.compile(self.model, backend=backend)) if config.compile else self.model
        )
        self._objective = _Objective(self.model, self.forward_model)
        self._train_forward: nn.Module = self._objective
        self.ema = WeightEMA(self.model, config.ema) if config.ema is not None else None

        self.step = 0
        self.skipped_steps = 0
        self._last_saved_step: int | None = None
        self.rows: list[_Row] = []
        self.val_results: list[dict[str, float]] = []
        self.best_psnr = -math.inf
        self._active_stage: int | None = None
        self._baseline: dict[str, float] | None = None
        self._seeded = False

    # ------------------------------------------------------------------ stages
    def _apply_stage(self, step: int) -> None:
        """Freeze/unfreeze parameters for the stage of ``step``; a stage that starts at ``step`` gets a fresh
        Adam state, as a separate training run per stage (the paper's recipe) would."""
        index = self.schedule.stage_index(step)
        if index == self._active_stage:
            return
        stage = self.schedule.stage(step)
        for name, p in self.model.named_parameters():
            is_memory = name in self.memory_names
            p.requires_grad_(stage.trainable == "all" or (stage.trainable == "memory") == is_memory)
        if step > 0 and self.schedule.stage_index(step - 1) != index:
            self.optimizer.state.clear()
        if self.world_size > 1:
            # DDP fixes its set of trainable parameters when built: a stage that changes it needs a new one.
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # Only MANA's memory stage leaves trainable parameters out of the loss (the memory's output
            # projection); the unused-parameter search costs a graph traversal per step, so only there.
            unused = stage.loss == "memory"
            self._train_forward = DistributedDataParallel(
                self._objective, device_ids=device_ids, find_unused_parameters=unused
            )
        self._active_stage = index

    def trainable_parameter_names(self, step: int | None = None) -> set[str]:
        """Names of the parameters that stage of ``step`` (default: the current step) trains."""
        stage = self.schedule.stage(self.step if step is None else step)
        return {
            n
            for n, _ in self.model.named_parameters()
            if stage.trainable == "all" or (stage.trainable == "memory") == (n in self.memory_names)
        }

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        return hr[:, hr.shape[1] // 2] if self.output_mode == "center" else hr

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimiser step on ``batch`` (this rank's share of the global batch); returns the loss of the
        global batch (a 0-d tensor on the device).

        Raises:
            NonFiniteLossError: the loss or gradient is not finite and ``on_nonfinite`` is ``"stop"`` (no
                weight changed).
        """
        self._apply_stage(self.step)
        stage = self.schedule.stage(self.step)
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        lr_clip = batch["lr"].to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        with self._autocast():
            outputs = self._train_forward(lr_clip, memory=stage.loss == "memory")
        if stage.loss == "memory":
            loss = outputs["memory"].float()
        else:
            loss = self.criterion(outputs["out"].float(), self._target(hr))
            loss = add_aux_losses(loss, outputs.get("aux"), self.config.aux_weight)
        self.scaler.scale(loss).backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = torch.isfinite(loss.detach())
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm: torch.Tensor | None = torch.nn.utils.clip_grad_norm_(grads, self.config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads and not self.scaler.is_enabled() else None
        if norm is not None and not self.scaler.is_enabled():
            # float16's scaler skips steps with inf gradients by design; only a bad loss is an error there.
            finite = finite & torch.isfinite(norm)
        mean_loss, all_finite = distributed.mean_and_all_true(loss.detach(), finite)
        skip = not all_finite
        if skip:
            if self.config.on_nonfinite == "stop":
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(self._nonfinite_message(float(mean_loss)))
            self.skipped_steps += 1
            if not self.scaler.is_enabled():
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                return mean_loss
        # With float16's scaler a skipped step still goes through it: its own inf check skips the update.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and not skip:
            self.ema.update(self.model)
        self.step += 1
        return mean_loss

    def _nonfinite_message(self, loss: float) -> str:
        kept = (
            f"{self.config.output_dir}/last.pt (step {self._last_saved_step}) is the last good checkpoint"
            if self._last_saved_step is not None
            else "no checkpoint was written yet"
        )
        what = f"the loss is {loss}" if not math.isfinite(loss) else "the gradient is not finite"
        return (
            f"step {self.step}: {what}; training stopped and {kept}. Lower --lr, set --grad-clip, "
            "or pass --on-nonfinite skip to skip such steps"
        )

    def _val_indices(self) -> list[int]:
        """This rank's items of ``val_data``: whole clips (item ``(clip, centre)`` goes to rank ``clip % W``),
        so every clip is scored once over the group."""
        items = getattr(self.val_data, "items", None)
        if items is None:
            return list(range(self.rank, len(cast(Sized, self.val_data)), self.world_size))
        return [i for i, (clip, _) in enumerate(items) if clip % self.world_size == self.rank]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM (RGB and Y, ``crop_border``) of the centre frames of ``val_data``, plus the
        bicubic baseline's Y-PSNR/SSIM (``bicubic_psnr_y``...). With ``ema``, the averaged weights are scored.
        Under a process group each rank scores its clips and the sums are added over the ranks."""
        if self.val_data is None:
            return {}
        model = self.ema.module if self.ema is not None else self.forward_model
        model.eval()
        keys = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
        # Sums of the per-frame scores, the baseline's, and the frame count: one all-reduce for all.
        sums = torch.zeros(2 * len(keys) + 1, dtype=torch.float64, device=self.device)
        cb = self.config.crop_border
        shard = torch.utils.data.Subset(self.val_data, self._val_indices())
        for item in DataLoader(shard, batch_size=1, num_workers=self.config.num_workers):
            lr_clip, hr = item["lr"].to(self.device), item["hr"].to(self.device)
            with self._autocast():
                out = model(lr_clip)
            pred = out[:, out.shape[1] // 2] if self.output_mode == "all" else out
            pred = pred.float().clamp(0, 1)
            target = hr[:, hr.shape[1] // 2]
            scores = frame_scores(pred, target, cb)
            row = [scores[k] for k in keys]
            if self._baseline is None:
                bic = bicubic_upsample(lr_clip[:, lr_clip.shape[1] // 2], self.scale).clamp(0, 1)
                bicubic = frame_scores(bic, target, cb)
                row += [bicubic[k] for k in keys]
            else:
                row += [0.0] * len(keys)
            sums += torch.tensor([*row, 1.0], dtype=torch.float64, device=self.device)
        totals: list[float] = distributed.all_reduce_sum(sums).tolist()
        count = max(totals[-1], 1.0)
        result = {k: totals[i] / count for i, k in enumerate(keys)}
        if self._baseline is None:
            self._baseline = {f"bicubic_{k}": totals[len(keys) + i] / count for i, k in enumerate(keys)}
        return {**result, **self._baseline}

    # ------------------------------------------------------------------ loop
    def fit(self, until: int | None = None) -> list[_Row]:
        """Train from the current step up to ``until`` (default: ``config.steps``), validating, logging and
        checkpointing on the way; returns the rows of the steps run so far (all of them, resumed ones included).

        Raises:
            NonFiniteLossError: a non-finite loss with ``on_nonfinite="stop"`` (the logs are written first).
        """
        cfg = self.config
        stop = min(cfg.steps, cfg.steps if until is None else until)
        out_dir = Path(cfg.output_dir)
        main = self.rank == 0
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(out_dir)
        if not self._seeded and self.step == 0:
            seed_everything(cfg.seed)
        self._seeded = True
        if self.step >= stop:
            return self.rows
        loader = DataLoader(
            self.train_data,
            batch_size=cfg.batch_size // self.world_size,
            sampler=_StepSampler(
                self.step, stop, cfg.batch_size, len(cast(Sized, self.train_data)), self.rank, self.world_size
            ),
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        bar = board = None
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="it", dynamic_ncols=True)
        if cfg.tensorboard and main:
            from reference_models.training.tensorboard_log import TensorBoardLog

            board = TensorBoardLog(out_dir / "tensorboard", start_step=self.step)
        pending: list[tuple[int, str, float, torch.Tensor]] = []
        start_time = time.perf_counter() - (self.rows[-1].time if self.rows else 0.0)

        def flush() -> None:
            now = time.perf_counter() - start_time
            for s, name, rate, loss in pending:
                self.rows.append(_Row(s, name, rate, float(loss), now))
                if board is not None:
                    board.step(s, self.rows[-1].loss, rate)
            pending.clear()

        try:
            for batch in loader:
                distributed.report_step(self.step)
                step, stage, lr = self.step, self.schedule.stage(self.step).name, self.schedule.lr(self.step)
                skipped_before = self.skipped_steps
                try:
                    pending.append((step, stage, lr, self.train_step(batch)))
                except NonFiniteLossError:
                    pending.append((step, stage, lr, torch.tensor(math.nan)))
                    flush()
                    if main:
                        self.write_logs()
                    raise
                if self.skipped_steps > skipped_before and main:
                    message = (
                        f"warning: step {step}: non-finite loss or gradient; step skipped ({self.skipped_steps} so far)"
                    )
                    _print_line(bar, message)
                done = self.step
                last = done == stop
                validate = self.val_data is not None and (
                    (cfg.val_every and done % cfg.val_every == 0) or done == cfg.steps
                )
                checkpoint = (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or last
                if len(pending) >= cfg.log_every or last or validate or checkpoint:
                    flush()
                    if bar is not None:
                        bar.update(done - bar.n)
                        bar.set_postfix(loss=f"{self.rows[-1].loss:.4g}", lr=f"{lr:.2e}", stage=stage, refresh=False)
                if validate:
                    result = self.validate()
                    self.rows[-1].val = result
                    self.val_results.append({"step": done, **result})
                    if bar is not None:
                        bar.write(_format_val(done, result))
                    if board is not None:
                        board.validation(done, result)
                    if result.get("psnr_y", -math.inf) > self.best_psnr:
                        self.best_psnr = result["psnr_y"]
                        if main:
                            self.save_checkpoint(out_dir / "best.pt")
                if checkpoint and main:
                    self.save_checkpoint(out_dir / "last.pt")
                    self._last_saved_step = done
                    self.write_logs()
        finally:
            if bar is not None:
                bar.close()
            if board is not None:
                board.close()
        if main:
            self.write_logs()
        return self.rows

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly (tensors and plain types)."""
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "data": {
                "seed": int(getattr(self.train_data, "seed", 0)),
                "next_index": self.step * self.config.batch_size,
            },
            "log": [asdict(r) for r in self.rows],
            "val": self.val_results,
            "best_psnr": self.best_psnr,
            "skipped_steps": self.skipped_steps,
            "world_size": self.world_size,
            "ema": self.ema.training_state() if self.ema is not None else None,
            "metadata": self.metadata,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run ``state`` (:meth:`state_dict`) describes. A ``config.steps`` other than the saved
        run's extends or shortens its schedule from this step on (:func:`~reference_models.training.schedule.extend_schedule`).

        Raises:
            ValueError: the data seed differs, or the schedule cannot change its length (``mana-3stage``).
        """
        self.step = int(state["step"])
        saved = state.get("scheduler")
        if saved and (saved.get("name") == ExtendedSchedule.name or saved.get("total_steps") != self.config.steps):
            self.schedule = extend_schedule(make_schedule(**saved), self.step, self.config.steps)
        # The next train_step freezes/unfreezes for its stage (and starts a fresh Adam state if a stage begins there).
        self._active_stage = None
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        data_seed = state.get("data", {}).get("seed")
        if data_seed is not None and hasattr(self.train_data, "seed") and self.train_data.seed != data_seed:
            raise ValueError(
                f"the checkpoint's data seed {data_seed} differs from the dataset's {self.train_data.seed}"
            )
        _set_rng_state(state["rng"])
        self._seeded = True
        self.rows = [_Row(**r) for r in state.get("log", [])]
        self.val_results = list(state.get("val", []))
        self.best_psnr = float(state.get("best_psnr", -math.inf))
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the model and the training state (``weights_only``-loadable) to ``path``."""
        from reference_models.checkpoint import save_checkpoint

        extra = {"params_ema": self.ema.state_dict()} if self.ema is not None else {}
        save_checkpoint(self.model, path, training=self.state_dict(), **extra)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the model weights, the moving average (when both the file and the run have one; else the
        average restarts from the weights) and the training state from a :meth:`save_checkpoint` file."""
        from reference_models.checkpoint import load_checkpoint

        extras = load_checkpoint(self.model, path, ema=False)
        if "training" not in extras:
            raise ValueError(f"checkpoint '{path}' holds weights only, no training state to resume from")
        self.load_state_dict(extras["training"])
        if self.ema is not None:
            saved = extras.get("params_ema")
            if saved is not None and extras["training"].get("ema"):
                self.ema.load(saved, extras["training"]["ema"])
            else:
                self.ema = WeightEMA(self.model, self.ema.decay)

    # ------------------------------------------------------------------ logs
    def write_logs(self) -> None:
        """``log.csv``, ``log.json`` and ``curve.png`` in ``config.output_dir``."""
        from reference_models.training.plot import plot_curves

        out_dir = Path(self.config.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        val_keys = sorted({k for r in self.rows for k in r.val})
        with open(out_dir / "log.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "stage", "lr", "loss", "time_s", *val_keys])
            for r in self.rows:
                writer.writerow(
                    [
                        r.step,
                        r.stage,
                        f"{r.lr:.6g}",
                        f"{r.loss:.6g}",
                        f"{r.time:.3f}",
                        *(f"{r.val[k]:.4f}" if k in r.val else "" for k in val_keys),
                    ]
                )
        payload = {
            "config": self.config.to_dict(),
            "lr": self.lr,
            "betas": list(self.betas),
            "world_size": self.world_size,
            "skipped_steps": self.skipped_steps,
            "rows": [asdict(r) for r in self.rows],
            "val": self.val_results,
        }
        (out_dir / "log.json").write_text(json.dumps(payload, indent=1))
        plot_curves(
            [(r.step, r.loss) for r in self.rows],
            [(v["step"], v["psnr_y"]) for v in self.val_results if "psnr_y" in v],
            out_dir / "curve.png",
            baseline=self._baseline.get("bicubic_psnr_y") if self._baseline else None,
        )


def add_aux_losses(loss: torch.Tensor, aux_losses: dict[str, torch.Tensor] | None, weight: float) -> torch.Tensor:
    """``loss + weight * sum(aux_losses.values())`` (in float32); ``loss`` itself when ``aux_losses`` is ``None``.

    Examples:
        >>> add_aux_losses(torch.tensor(1.0), {"photometric": torch.tensor(2.0), "cycle": torch.tensor(4.0)}, 0.5)
        tensor(4.)
        >>> add_aux_losses(torch.tensor(1.0), None, 0.5)
        tensor(1.)
    """
    if aux_losses is None:
        return loss
    return loss + weight * sum(value.float() for value in aux_losses.values())


def frame_scores(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> dict[str, float]:
    """Batch-mean ``psnr_rgb``, ``ssim_rgb``, ``psnr_y``, ``ssim_y`` of ``(B, 3, H, W)`` frames in ``[0, 1]``
    (``crop_border`` is dropped for frames too small to keep an 11x11 SSIM window after it)."""
    cb = crop_border if 2 * crop_border + 11 <= min(pred.shape[-2:]) else 0
    return {
        "psnr_rgb": float(psnr(pred, target, crop_border=cb).mean()),
        "ssim_rgb": float(ssim(pred, target, crop_border=cb).mean()),
        "psnr_y": float(psnr(pred, target, crop_border=cb, test_y_channel=True).mean()),
        "ssim_y": float(ssim(pred, target, crop_border=cb, test_y_channel=True).mean()),
    }


def _print_line(bar: Any, message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def _format_val(step: int, r: dict[str, float]) -> str:
    return (
        f"step {step}: PSNR-Y {r['psnr_y']:.2f} dB (bicubic {r['bicubic_psnr_y']:.2f}), SSIM-Y {r['ssim_y']:.4f}, "
        f"PSNR-RGB {r['psnr_rgb']:.2f} dB, SSIM-RGB {r['ssim_rgb']:.4f}"
    )
