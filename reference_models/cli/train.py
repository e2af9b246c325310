"""``python -m reference_models train MODEL --data DIR ...`` (or ``--dataset reds --root DIR``): the command line of
the training loop.

Every option left out takes its default, or, with ``--resume``, the value the checkpoint's run used, so
``train mana --data clips --resume runs/mana/last.pt`` continues exactly (give ``--steps`` to extend it:
a cosine schedule then anneals smoothly from the step's learning rate to the new end). ``--resume auto``
continues from ``OUTPUT/last.pt`` when it exists and starts a new run when it does not, and says which: the way
to launch under ``torchrun --max-restarts N`` or a scheduler that requeues jobs, so that a restart costs only
the steps since the last checkpoint.

Under ``torchrun --nproc-per-node N -m reference_models train ...`` the run is data-parallel over N
processes (``--batch-size`` stays the global batch), across nodes with torchrun's c10d rendezvous. All ranks
leave the group together; a rank that dies or hangs is named by the others within ``--dist-timeout``. SIGINT
and SIGTERM stop a run with status 130 and 143 within seconds, even in a collective, leaving no half-written
checkpoint. torch is imported only once the arguments are parsed, so ``--help`` is immediate.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reference_models.data.catalog import TRAIN_DATASETS
from reference_models.training.recipes import LOSSES, NONFINITE_POLICIES, PAPER_RECIPES
from reference_models.training.schedule import SCHEDULES

__all__ = ["build_parser", "main"]

#: Defaults of the options that are not :class:`TrainConfig` fields.
_DATA_DEFAULTS: dict[str, Any] = {
    "preset": "tiny",
    "aux_losses": False,
    "patch_size": 32,
    "degradation": "bicubic",
    "blur_sigma": [1.6],
    "augment": True,
    "val_data": None,
    "val_holdout": 0,
    "val_frames": 8,
    "val_crop": 256,
    "weights": None,
}


#: Options that describe this launch, not the run: never taken from a resumed checkpoint.
_NOT_SAVED = ("model", "data", "dataset", "root", "resume", "dist_timeout")


def build_parser() -> argparse.ArgumentParser:
    from reference_models import list_models

    p = argparse.ArgumentParser(
        prog="python -m reference_models train",
        description="Train or fine-tune a reference model on a folder of HR clips (sub-folders of frames, or video files).",
        epilog="Options left out take their defaults, or with --resume the values of the checkpoint's run.",
    )
    p.add_argument("model", choices=list_models(), help="the network to train")
    p.add_argument(
        "--data",
        help="folder of HR clips: one sub-folder of frames per clip, or video files (= --dataset folder --root DIR)",
    )
    p.add_argument(
        "--dataset",
        choices=TRAIN_DATASETS,
        help="a dataset laid out as distributed under --root: reds (train_sharp without REDS4), vimeo90k (sep_trainlist.txt), vid4, folder; its provided LR frames are used when present",
    )
    p.add_argument("--root", help="the --dataset's folder")
    p.add_argument("--preset", help="model preset (default: tiny)")
    p.add_argument("--weights", help="start from these weights (a reference_models checkpoint or a state_dict file)")
    p.add_argument(
        "--resume",
        metavar="PATH|auto",
        help="continue the run saved in this checkpoint (last.pt); auto: OUTPUT/last.pt if it exists, else a new run "
        "(for torchrun --max-restarts and requeueing schedulers)",
    )
    p.add_argument("--output", dest="output_dir", help="folder for checkpoints and logs (default: runs/MODEL)")

    g = p.add_argument_group("data")
    g.add_argument("--patch-size", type=int, help="LR crop size; the HR crop is 4x (default: 32)")
    g.add_argument("--degradation", help="bicubic: MATLAB-style x4 bicubic (default); blur: Gaussian blur + subsample")
    g.add_argument(
        "--blur-sigma",
        type=float,
        nargs="+",
        help="Gaussian sigma of --degradation blur, or a LOW HIGH range (default: 1.6)",
    )
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no random flips/rotations")
    g.add_argument("--val-data", help="folder of validation clips")
    g.add_argument("--val-holdout", type=int, help="hold out the last N clips of --data for validation (default: 0)")
    g.add_argument("--val-frames", type=int, help="frames scored per validation clip, evenly spaced (default: 8)")
    g.add_argument(
        "--val-crop", type=int, help="validate on a centred HR crop of this size, 0 for whole frames (default: 256)"
    )
    g.add_argument("--workers", dest="num_workers", type=int, help="DataLoader worker processes (default: 0)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="total optimiser steps (default: 10000)")
    g.add_argument("--batch-size", type=int, help="clips per step (default: 8)")
    g.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default: the paper's: "
        + ", ".join(f"{k} {v['lr']:g}" for k, v in PAPER_RECIPES.items())
        + ")",
    )
    g.add_argument(
        "--betas",
        type=float,
        nargs=2,
        help="Adam betas (default: the paper's: mana 0.5 0.99, vsrt 0.9 0.99, dasaa/mafnet 0.9 0.999)",
    )
    g.add_argument("--loss", choices=LOSSES, help="pixel loss (default: charbonnier)")
    g.add_argument(
        "--aux-losses",
        action="store_true",
        default=None,
        help="dasaa: add PASSRnet's auxiliary alignment losses (photometric, cycle, smoothness) to the pixel loss (default: off)",
    )
    g.add_argument("--aux-weight", type=float, help="weight of the auxiliary losses (default: 0.005, PASSRnet's)")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="cosine (with --cycles restarts, VSRT), constant, or MANA's mana-3stage (default: cosine)",
    )
    g.add_argument("--cycles", type=int, help="cosine periods; 1 = no restart (default: 1)")
    g.add_argument("--eta-min", type=float, help="cosine floor (default: 1e-7)")
    g.add_argument(
        "--stage-fractions",
        type=float,
        nargs=3,
        help="mana-3stage: share of the steps per stage (default: 0.6 0.2 0.2)",
    )
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default: off)")
    amp = g.add_mutually_exclusive_group()
    amp.add_argument(
        "--amp", dest="amp", action="store_true", default=None, help="mixed precision (default: on for CUDA)"
    )
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="full precision")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument(
        "--dist-timeout",
        type=float,
        metavar="SECONDS",
        help="torchrun: how long a rank waits for the others before reporting the one that died or hangs (default: 300)",
    )
    g.add_argument(
        "--seed",
        type=int,
        help="seed of the initial weights, the data stream and the model's randomness: the same seed gives the same run on CPU (default: 0)",
    )
    g.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep a moving average of the weights (BasicSR: 0.999), validated and saved as params_ema (default: off)",
    )
    g.add_argument(
        "--on-nonfinite",
        choices=NONFINITE_POLICIES,
        help="a NaN/inf loss or gradient: stop the run (default), or skip that step's update",
    )

    g = p.add_argument_group("monitoring")
    g.add_argument("--val-every", type=int, help="validate every N steps (default: 1000)")
    g.add_argument("--crop-border", type=int, help="border pixels ignored by PSNR/SSIM (default: 4)")
    g.add_argument("--checkpoint-every", type=int, help="save last.pt every N steps (default: 1000)")
    g.add_argument("--log-every", type=int, help="refresh the progress bar every N steps (default: 10)")
    g.add_argument("--quiet", dest="progress", action="store_false", default=None, help="no progress bar")
    g.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also write TensorBoard events to OUTPUT/tensorboard (needs the tensorboard extra)",
    )
    return p


def _resolve(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """Explicit options, else the resumed run's, else the defaults."""
    from reference_models.training.trainer import TrainConfig

    defaults = {**TrainConfig().to_dict(), **_DATA_DEFAULTS, "output_dir": f"runs/{args.model}"}
    base = {**defaults, **(saved or {})}
    given = {k: v for k, v in vars(args).items() if v is not None and k not in _NOT_SAVED}
    return {**base, **given}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``train`` command; returns the exit status.

    A failure the user can cause (missing or unreadable data, checkpoint or weights of another model, bad
    option value) ends with one line ``error: ...`` on stderr and status 1, without a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        argv = argv[1:]
    args = build_parser().parse_args(argv)

    from reference_models.io.video import VideoIOError
    from reference_models.training import distributed
    from reference_models.training.trainer import NonFiniteLossError
    from vsrblocks.checkpoint import CheckpointError

    previous = _on_sigterm_raise()
    clean = False
    try:
        with distributed.exit_watchdog(on_exit=_killed_in_native_code):
            status = _train(args)
            distributed.shutdown(clean=True)
            clean = True
            return status
    except (CheckpointError, VideoIOError, ValueError, OSError, NonFiniteLossError, distributed.PeerFailure) as exc:
        _error(" ".join(str(exc).split()))
        return 1
    except KeyboardInterrupt:
        _error("interrupted; --resume from the last saved last.pt continues the run")
        return 130
    except _Terminated:
        _error("terminated; --resume from the last saved last.pt continues the run")
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if not clean:
            distributed.shutdown(clean=False)


def _killed_in_native_code(signum: int) -> None:
    name = signal.Signals(signum).name
    _error(
        f"{name} while waiting for the other processes; stopped. --resume from the last saved last.pt continues the run"
    )


class _Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every ``finally`` (a checkpoint's temporary file) runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _on_sigterm_raise() -> Any:
    """Turn SIGTERM into :class:`_Terminated` (main thread only); returns the previous handler or ``None``."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _error(message: str) -> None:
    from reference_models.training import distributed

    where = f"[rank {distributed.rank()}] " if distributed.world_size() > 1 else ""
    print(f"error: {where}{message}", file=sys.stderr)


def _check_options(opts: dict[str, Any]) -> None:
    """Values argparse cannot check by type alone."""
    if opts["patch_size"] < 1:
        raise ValueError(f"--patch-size must be >= 1 (LR pixels), got {opts['patch_size']}")
    for key, flag in (
        ("val_holdout", "--val-holdout"),
        ("val_frames", "--val-frames"),
        ("val_crop", "--val-crop"),
        ("num_workers", "--workers"),
    ):
        if opts[key] is not None and opts[key] < 0:
            raise ValueError(f"{flag} must be >= 0, got {opts[key]}")


def _auto_path(args: argparse.Namespace) -> Path:
    """Where ``--resume auto`` looks: ``OUTPUT/last.pt``."""
    return Path(args.output_dir or f"runs/{args.model}") / "last.pt"


def _resume_path(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The checkpoint to resume from (``None``: a new run), and whether ``--resume auto`` found one."""
    if args.resume != "auto":
        return args.resume, False
    path = _auto_path(args)
    return (str(path), True) if path.exists() else (None, False)


def _train(args: argparse.Namespace) -> int:
    import torch

    from reference_models import create_model
    from reference_models.checkpoint import load_checkpoint
    from reference_models.data.catalog import open_dataset
    from reference_models.data.dataset import TrainClips, ValClips, load_clips
    from reference_models.training import distributed
    from reference_models.training.trainer import TrainConfig, Trainer, seed_everything

    resume, auto_found = _resume_path(args)
    saved = None
    if resume is not None:
        from reference_models.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(resume)
        training = checkpoint.get("training") or {}
        saved = training.get("metadata", {}).get("options")
        if saved is None:
            raise ValueError(f"{resume} holds no training state to resume from")
        held = (checkpoint.get("model_spec") or {}).get("name")
        if held is not None and held != args.model:
            raise ValueError(f"{resume} holds a {held} run, not {args.model}: give another --output or --resume")
    opts = _resolve(args, saved)
    _check_options(opts)
    if str(opts["device"] or "").startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {opts['device']}: CUDA is not available on this machine")
    overrides = {"aux_losses": True} if opts["aux_losses"] else {}
    if overrides and args.model != "dasaa":
        raise ValueError(f"--aux-losses: only dasaa has auxiliary losses, not {args.model}")
    distributed.init_from_env(
        distributed.local_device(opts["device"]), timeout_s=args.dist_timeout or distributed.DEFAULT_TIMEOUT_S
    )
    if args.resume == "auto" and distributed.broadcast_flag(auto_found) != auto_found:
        raise ValueError(
            f"--resume auto: rank 0 and rank {distributed.rank()} disagree on whether {_auto_path(args)} exists: "
            "--output must be a folder that every node sees (a shared filesystem)"
        )
    main_rank = distributed.is_main()
    say = print if main_rank else (lambda *_: None)
    if not main_rank:
        opts["progress"] = False
    # Seeded before the model is built: its initial weights are part of the run the seed names.
    seed_everything(opts["seed"])
    model = create_model(args.model, opts["preset"], **overrides)
    if args.resume == "auto" and resume is None:
        say(f"--resume auto: no {_auto_path(args)} yet; starting a new run")
    if opts["weights"] and resume is None:
        load_checkpoint(model, opts["weights"])

    if (args.data is None) == (args.dataset is None) or (args.dataset is None) != (args.root is None):
        raise ValueError("give the training data as --data DIR, or as --dataset NAME --root DIR")
    data_root = args.data or args.root
    kind = {"bicubic": "bi", "blur": "bd"}[opts["degradation"]]
    dataset = open_dataset(args.dataset or "folder", data_root, degradation=kind, scale=model.scale)
    print(dataset.describe_lr(kind))
    clips, lr_clips = dataset.hr, dataset.lr
    val_clips = load_clips(opts["val_data"]) if opts["val_data"] else []
    val_lr = None
    if opts["val_holdout"]:
        if opts["val_holdout"] >= len(clips):
            raise ValueError(
                f"--val-holdout {opts['val_holdout']} leaves no training clip of the {len(clips)} in {data_root}"
            )
        clips, val_clips = clips[: -opts["val_holdout"]], val_clips + clips[-opts["val_holdout"] :]
        if lr_clips is not None:
            # Provided LR frames validate the held-out clips only when no --val-data clip lacks them.
            lr_clips, val_lr = (
                lr_clips[: -opts["val_holdout"]],
                None if opts["val_data"] else lr_clips[-opts["val_holdout"] :],
            )
    sigma = opts["blur_sigma"]
    sigma = float(sigma[0]) if len(sigma) == 1 else (float(sigma[0]), float(sigma[1]))
    train_data = TrainClips(
        clips,
        num_frames=model.num_frames,
        patch_size=opts["patch_size"],
        scale=model.scale,
        augment=opts["augment"],
        degradation=opts["degradation"],
        blur_sigma=sigma,
        seed=opts["seed"],
        lr_clips=lr_clips,
    )
    val_data = None
    if val_clips:
        val_data = ValClips(
            val_clips,
            num_frames=model.num_frames,
            scale=model.scale,
            degradation=opts["degradation"],
            blur_sigma=sigma if isinstance(sigma, float) else sum(sigma) / 2,
            frames_per_clip=opts["val_frames"] or None,
            crop=opts["val_crop"] or None,
            lr_clips=val_lr,
        )
    config = TrainConfig.from_dict(opts)
    trainer = Trainer(model, train_data, config, val_data, metadata={"options": opts})
    if resume is not None:
        trainer.load_checkpoint(resume)
        say(f"resumed {resume} at step {trainer.step} of {config.steps}")
        if trainer.schedule.name == "extended":
            say(
                f"--steps {config.steps}: the schedule anneals from lr {trainer.schedule.lr(trainer.step):.3g} at step {trainer.step} to {config.eta_min:g} at step {config.steps}"
            )
    if val_data is None:
        say("no validation data (--val-data or --val-holdout): training without PSNR/SSIM checks")
    out = Path(config.output_dir)
    world = f" on {trainer.world_size} processes" if trainer.world_size > 1 else ""
    say(
        f"training {args.model} ({opts['preset']}, {sum(p.numel() for p in model.parameters()):,} parameters) on {len(clips)} clip(s), "
        f"{config.steps} steps of batch {config.batch_size}, lr {trainer.lr:g}, betas {trainer.betas}, {config.schedule} schedule, "
        f"device {trainer.device}{world}; writing {out}/"
    )
    with distributed.failures_named():
        trainer.fit()
    if trainer.val_results:
        last = trainer.val_results[-1]
        say(
            f"final: PSNR-Y {last['psnr_y']:.2f} dB (bicubic {last['bicubic_psnr_y']:.2f} dB), SSIM-Y {last['ssim_y']:.4f}"
        )
    if trainer.skipped_steps:
        say(
            f"warning: {trainer.skipped_steps} step(s) skipped for a non-finite loss or gradient (log.json: skipped_steps)"
        )
    written = [
        out / name for name in ("last.pt", "best.pt", "log.csv", "log.json", "curve.png") if (out / name).exists()
    ]
    say(f"wrote {', '.join(str(path) for path in written)}")
    return 0
