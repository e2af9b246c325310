"""The training loop: Adam, a step-indexed schedule, AMP, clipping, validation, checkpoints and logs.

:class:`Trainer` trains any model that maps ``(B, T, 3, h, w)`` LR clips to the centre HR frame
(``output_mode="center"``) or to every HR frame (``output_mode="all"``). Every quantity of step ``k`` is a
function of the state saved in a checkpoint: the model, Adam's moments, the AMP scaler, the RNG states and
``k`` itself (the learning rate and stage come from the schedule, the batch from the dataset indices
``k * batch_size ...``), so :meth:`Trainer.load_checkpoint` continues a run exactly where it stopped.

Files written to ``config.output_dir``: ``last.pt`` and ``best.pt`` (best validation Y-PSNR) checkpoints,
``log.csv`` (one row per step; validation columns filled on validation steps), ``log.json`` (configuration,
the same rows, validation results) and ``curve.png`` (training loss and validation PSNR against steps).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from reference_models.data.degradation import bicubic_upsample
from reference_models.training.schedule import SCHEDULES, Schedule, make_schedule, memory_parameter_names
from vsrblocks.losses import CharbonnierLoss, L1Loss
from vsrblocks.metrics import psnr, ssim

__all__ = ["TrainConfig", "Trainer", "PAPER_RECIPES", "frame_scores", "add_aux_losses"]

#: Learning rate and Adam betas of each paper (DASAA and MAFnet: assumptions, see ``specs/dasaa_mafnet.md``).
PAPER_RECIPES: dict[str, dict[str, Any]] = {
    "mana": {"lr": 1e-4, "betas": (0.5, 0.99)},
    "vsrt": {"lr": 2e-4, "betas": (0.9, 0.99)},
    "dasaa": {"lr": 2e-4, "betas": (0.9, 0.999)},
    "mafnet": {"lr": 2e-4, "betas": (0.9, 0.999)},
}
_DEFAULT_RECIPE = {"lr": 2e-4, "betas": (0.9, 0.99)}
LOSSES = ("charbonnier", "l1")


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
        seed: seeds the model's randomness (torch, numpy, python) at the start of a run.
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
    """Dataset indices ``start, start + 1, ...`` (wrapped at ``len(dataset)``): sample ``j`` of step ``k``
    is index ``k * batch_size + j``, so resuming at step ``k`` continues the same stream."""

    def __init__(self, start: int, stop: int, length: int) -> None:
        self.start, self.stop, self.length = start, stop, length

    def __iter__(self) -> Iterator[int]:
        return (i % self.length for i in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain types (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss_next": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        spec = getattr(model, "model_spec", None) or {}
        recipe = PAPER_RECIPES.get(spec.get("name", ""), _DEFAULT_RECIPE)
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
        self.forward_model = torch.compile(self.model, backend=backend) if config.compile else self.model

        self.step = 0
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
        self._active_stage = index

    def trainable_parameter_names(self, step: int | None = None) -> set[str]:
        """Names of the parameters that stage of ``step`` (default: the current step) trains."""
        stage = self.schedule.stage(self.step if step is None else step)
        return {n for n, _ in self.model.named_parameters() if stage.trainable == "all" or (stage.trainable == "memory") == (n in self.memory_names)}

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        return hr[:, hr.shape[1] // 2] if self.output_mode == "center" else hr

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimiser step on ``batch``; returns the loss (a 0-d tensor on the device, not synchronised)."""
        self._apply_stage(self.step)
        stage = self.schedule.stage(self.step)
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        lr_clip = batch["lr"].to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        with self._autocast():
            out = self.forward_model(lr_clip)
        if stage.loss == "memory":
            loss = self.model.last_memory_loss.float()
        else:
            loss = self.criterion(out.float(), self._target(hr))
            loss = add_aux_losses(loss, getattr(self.model, "last_aux_losses", None), self.config.aux_weight)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM (RGB and Y, ``crop_border``) of the centre frames of ``val_data``, plus the
        bicubic baseline's Y-PSNR/SSIM (``bicubic_psnr_y``...)."""
        if self.val_data is None:
            return {}
        self.model.eval()
        scores: dict[str, list[float]] = {}
        baseline: dict[str, list[float]] = {}
        cb = self.config.crop_border
        for item in DataLoader(self.val_data, batch_size=1, num_workers=self.config.num_workers):
            lr_clip, hr = item["lr"].to(self.device), item["hr"].to(self.device)
            with self._autocast():
                out = self.forward_model(lr_clip)
            pred = out[:, out.shape[1] // 2] if self.output_mode == "all" else out
            pred = pred.float().clamp(0, 1)
            target = hr[:, hr.shape[1] // 2]
            for key, value in frame_scores(pred, target, cb).items():
                scores.setdefault(key, []).append(value)
            if self._baseline is None:
                bic = bicubic_upsample(lr_clip[:, lr_clip.shape[1] // 2], self.scale).clamp(0, 1)
                for key, value in frame_scores(bic, target, cb).items():
                    baseline.setdefault(f"bicubic_{key}", []).append(value)
        if self._baseline is None:
            self._baseline = {k: float(np.mean(v)) for k, v in baseline.items()}
        result = {k: float(np.mean(v)) for k, v in scores.items()}
        return {**result, **self._baseline}

    # ------------------------------------------------------------------ loop
    def fit(self, until: int | None = None) -> list[_Row]:
        """Train from the current step up to ``until`` (default: ``config.steps``), validating, logging and
        checkpointing on the way; returns the rows of the steps run so far (all of them, resumed ones included)."""
        cfg = self.config
        stop = min(cfg.steps, cfg.steps if until is None else until)
        out_dir = Path(cfg.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self._seeded and self.step == 0:
            _seed_everything(cfg.seed)
        self._seeded = True
        if self.step >= stop:
            return self.rows
        loader = DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            sampler=_StepSampler(self.step * cfg.batch_size, stop * cfg.batch_size, len(self.train_data)),
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="it", dynamic_ncols=True)
        pending: list[tuple[int, str, float, torch.Tensor]] = []
        start_time = time.perf_counter() - (self.rows[-1].time if self.rows else 0.0)
        for batch in loader:
            step, stage, lr = self.step, self.schedule.stage(self.step).name, self.schedule.lr(self.step)
            pending.append((step, stage, lr, self.train_step(batch)))
            done = self.step
            last = done == stop
            validate = self.val_data is not None and ((cfg.val_every and done % cfg.val_every == 0) or done == cfg.steps)
            checkpoint = (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or last
            if len(pending) >= cfg.log_every or last or validate or checkpoint:
                now = time.perf_counter() - start_time
                for s, name, rate, loss in pending:
                    self.rows.append(_Row(s, name, rate, float(loss), now))
                pending.clear()
                if bar is not None:
                    bar.update(done - bar.n)
                    bar.set_postfix(loss=f"{self.rows[-1].loss:.4g}", lr=f"{lr:.2e}", stage=stage, refresh=False)
            if validate:
                result = self.validate()
                self.rows[-1].val = result
                self.val_results.append({"step": done, **result})
                if bar is not None:
                    bar.write(_format_val(done, result))
                if result.get("psnr_y", -math.inf) > self.best_psnr:
                    self.best_psnr = result["psnr_y"]
                    self.save_checkpoint(out_dir / "best.pt")
            if checkpoint:
                self.save_checkpoint(out_dir / "last.pt")
                self.write_logs()
        if bar is not None:
            bar.close()
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
            "data": {"seed": int(getattr(self.train_data, "seed", 0)), "next_index": self.step * self.config.batch_size},
            "log": [asdict(r) for r in self.rows],
            "val": self.val_results,
            "best_psnr": self.best_psnr,
            "metadata": self.metadata,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        # The next train_step freezes/unfreezes for its stage (and starts a fresh Adam state if a stage begins there).
        self._active_stage = None
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        data_seed = state.get("data", {}).get("seed")
        if data_seed is not None and hasattr(self.train_data, "seed") and self.train_data.seed != data_seed:
            raise ValueError(f"the checkpoint's data seed {data_seed} differs from the dataset's {self.train_data.seed}")
        _set_rng_state(state["rng"])
        self._seeded = True
        self.rows = [_Row(**r) for r in state.get("log", [])]
        self.val_results = list(state.get("val", []))
        self.best_psnr = float(state.get("best_psnr", -math.inf))

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the model and the training state (``weights_only``-loadable) to ``path``."""
        from reference_models.checkpoint import save_checkpoint

        save_checkpoint(self.model, path, training=self.state_dict())

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the model weights and the training state from a :meth:`save_checkpoint` file."""
        from reference_models.checkpoint import load_checkpoint

        extras = load_checkpoint(self.model, path)
        if "training" not in extras:
            raise ValueError(f"checkpoint '{path}' holds weights only, no training state to resume from")
        self.load_state_dict(extras["training"])

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
                writer.writerow([r.step, r.stage, f"{r.lr:.6g}", f"{r.loss:.6g}", f"{r.time:.3f}", *(f"{r.val[k]:.4f}" if k in r.val else "" for k in val_keys)])
        payload = {"config": self.config.to_dict(), "lr": self.lr, "betas": list(self.betas), "rows": [asdict(r) for r in self.rows], "val": self.val_results}
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


def _format_val(step: int, r: dict[str, float]) -> str:
    return (
        f"step {step}: PSNR-Y {r['psnr_y']:.2f} dB (bicubic {r['bicubic_psnr_y']:.2f}), SSIM-Y {r['ssim_y']:.4f}, "
        f"PSNR-RGB {r['psnr_rgb']:.2f} dB, SSIM-RGB {r['ssim_rgb']:.4f}"
    )
