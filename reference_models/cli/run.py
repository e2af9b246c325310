"""``run``: super-resolve a folder of frames or a video file.

    python -m reference_models run MODEL --input PATH --output DIR --checkpoint FILE [--preset NAME]
        [--tile N] [--tile-overlap N] [--max-memory SIZE] [--device cpu|cuda] [--precision auto|float32|bfloat16]
        [--batch N] [--resume] [--max-seq-len N [--seq-overlap N]] [--spill-dir DIR]
    python -m reference_models run --checkpoint FILE --input in.mp4 --output out.mp4 [--codec NAME] [--crf N]
        [--pix-fmt NAME] [--no-audio]
    python -m reference_models run --backend onnxruntime --model FILE.onnx --input PATH --output OUT

Every failure the user can cause (missing or corrupt checkpoint, checkpoint of another model, unreadable
input, empty folder, bad option, non-finite model output) ends with one line ``error: ...`` on stderr and exit
status 1. Output is written under a partial name and only moved into place when every frame is done; SIGINT
and SIGTERM remove the partial output and exit 130 / 143 (a ``--resume`` run keeps its finished frames for the
next ``--resume``), and partials of runs that were killed outright are removed (or resumed) by the next run
into the same output. Torch is imported only when a model runs, so ``--help`` answers at once.

Recurrent models (BasicVSR, IconVSR, BasicVSR++) run the whole input as one sequence, exactly as their
whole-clip forward, in memory bounded by ``--max-memory`` whatever the number of frames: the features of
each sweep beyond the budget spill to a private folder under ``--spill-dir`` (default ``$TMPDIR``), removed
after the run, also after SIGINT/SIGTERM; progress is shown per sweep with the whole run's ETA, and frames
are written as the last sweep produces them. ``--max-seq-len N`` runs overlapping segments instead: the fast
approximate mode (tiled with ``--tile`` or when frames exceed the budget, as for the other models).

``--precision`` (default ``auto``) picks the arithmetic: ``auto`` is bfloat16 with float32 islands on CPUs with
AMX or AVX-512 BF16 (and CUDA devices with bfloat16), float32 elsewhere, and the run says which it chose and why
(:mod:`reference_models.inference.precision`). The older ``--dtype`` is deprecated: ``--dtype float32`` is
``--precision float32``; ``--dtype bfloat16|float16`` still casts the whole model, every operation in that dtype
with no float32 islands (less accurate than ``--precision bfloat16``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from collections.abc import Generator, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from reference_models.cli.options import (
    Interrupted,
    UserError,
    add_model_options,
    build_model,
    models_epilog,
    print_warning,
    signals_interrupt,
)

__all__ = ["MIN_TILE", "build_parser", "main"]

# Below 16 LR pixels a tile costs a whole forward pass for a few pixels (--tile 1 ran for hours).
MIN_TILE = 16
MIN_FPS, MAX_FPS = 0.01, 1000.0


def build_parser() -> argparse.ArgumentParser:
    run = argparse.ArgumentParser(
        prog="python -m reference_models run",
        description="Super-resolve a folder of frames (png/jpg, natural order) or a video file. Output: PNG "
        "frames with the input names in a folder, or a video when OUTPUT has a video extension (.mp4, .mkv ...).",
        epilog=models_epilog(),
    )
    add_model_options(run)
    run.add_argument("--input", "-i", required=True, help="folder of frames or video file")
    run.add_argument("--output", "-o", required=True, help="output folder, or a video file (.mp4, .mkv, ...)")
    run.add_argument(
        "--tile",
        type=int,
        help=f"run spatial tiles of at most N x N LR pixels (bounds memory; at least {MIN_TILE}, more where the model "
        "needs it)",
    )
    run.add_argument(
        "--tile-overlap", type=int, help="overlap of tiles in LR pixels, at most half the tile (default: min(16, N/2))"
    )
    run.add_argument(
        "--max-memory",
        help="memory budget of the forward passes, e.g. 4G or 512M (default: half the available memory); without "
        "--tile, frames that would exceed it run as tiles",
    )
    run.add_argument(
        "--max-seq-len",
        type=int,
        metavar="N",
        help="recurrent models (basicvsr, iconvsr, basicvsrpp): run overlapping segments of N frames, faster but "
        "approximate (less temporal context near the cuts); default: the whole input as one exact sequence, its "
        "features spilled to disk beyond --max-memory",
    )
    run.add_argument("--seq-overlap", type=int, metavar="N", help="frames shared by consecutive segments (default N/4)")
    run.add_argument(
        "--spill-dir",
        help="recurrent models, whole sequence: where features beyond --max-memory are spilled "
        "(a private folder inside it, removed after the run; default: $TMPDIR or /tmp)",
    )
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    run.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        help="arithmetic of the model: bfloat16 runs convolutions in bfloat16 and keeps flows, warping, norms, attention "
        "statistics and the bilinear skip in float32; auto (default): bfloat16 where the CPU has AMX or AVX-512 BF16 "
        "(or the GPU has bfloat16), float32 elsewhere",
    )
    run.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="deprecated, use --precision: cast the whole model to this dtype (no float32 islands)",
    )
    run.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    run.add_argument(
        "--fps",
        type=float,
        help=f"frame rate of a video output, {MIN_FPS:g} to {MAX_FPS:g} (default: the input video's time stamps, "
        "else 25)",
    )
    run.add_argument("--codec", help="video encoder of a video output (default: libx264, else mpeg4)")
    run.add_argument("--crf", type=int, help="quality of libx264/libx265/VP9/AV1 output, lower is better (default 17)")
    run.add_argument("--pix-fmt", help="pixel format of a video output (default: yuv420p; yuv444p for odd sizes)")
    run.add_argument(
        "--no-audio", action="store_true", help="leave out the input video's audio and subtitles (copied by default)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="folder output: skip frames already written there (complete PNGs of the right size) or left by an "
        "interrupted --resume run",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    run.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime"],
        default="pytorch",
        help="onnxruntime: run an exported --model FILE.onnx (python -m reference_models export)",
    )
    run.add_argument(
        "--model", dest="onnx_file", metavar="FILE.onnx", help="the exported model of --backend onnxruntime"
    )
    run.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model with Inductor freezing (faster convolutions; the first window at each new "
        "size compiles for minutes: worth it for long videos)",
    )
    return run


def _check_options(args: argparse.Namespace) -> None:
    """The option errors found without reading anything."""
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.dtype is not None and args.precision is not None:
        raise UserError("give --precision or the deprecated --dtype, not both")
    if args.dtype is not None:
        if args.dtype != "float32":
            warnings.warn(
                f"--dtype is deprecated: --dtype {args.dtype} runs every operation in {args.dtype}; --precision "
                "bfloat16 keeps flows, norms and the bilinear skip in float32 and is more accurate"
            )
        args.precision = "float32"  # the cast model runs as it is
    else:
        args.dtype = "float32"
    args.precision = args.precision or "auto"
    if args.precision == "bfloat16" and (args.backend == "onnxruntime" or args.onnx_file):
        raise UserError("--precision bfloat16 runs a PyTorch model; --backend onnxruntime runs float32")
    if args.compile and (args.backend == "onnxruntime" or args.onnx_file):
        raise UserError("--compile compiles a PyTorch model; it does not apply to --backend onnxruntime")
    if args.fps is not None and not MIN_FPS <= args.fps <= MAX_FPS:  # also rejects nan and inf
        raise UserError(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {args.fps:g}")
    if args.tile is not None and args.tile < MIN_TILE:
        raise UserError(f"--tile must be >= {MIN_TILE}, got {args.tile}")
    if args.tile is not None and args.tile_overlap is None:
        args.tile_overlap = min(16, args.tile // 2)
    if args.tile is not None and not 0 <= args.tile_overlap <= args.tile // 2:
        raise UserError(f"--tile-overlap must be in [0, --tile/2 = {args.tile // 2}], got {args.tile_overlap}")
    if args.max_seq_len is not None and args.max_seq_len < 1:
        raise UserError(f"--max-seq-len must be >= 1, got {args.max_seq_len}")
    if args.seq_overlap is not None:
        if args.max_seq_len is None:
            raise UserError("--seq-overlap goes with --max-seq-len")
        if not 0 <= args.seq_overlap < args.max_seq_len:
            raise UserError(f"--seq-overlap must be in [0, --max-seq-len = {args.max_seq_len}), got {args.seq_overlap}")
    if args.spill_dir is not None and args.max_seq_len is not None:
        raise UserError("--spill-dir applies to whole-sequence runs; segments (--max-seq-len) spill nothing")
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise UserError("--output must differ from --input")
    from reference_models.io.video import VIDEO_EXTENSIONS

    if Path(args.output).suffix.lower() not in VIDEO_EXTENSIONS:
        options = (("--codec", args.codec), ("--crf", args.crf), ("--pix-fmt", args.pix_fmt))
        given = [flag for flag, value in options if value is not None]
        if given:
            raise UserError(f"{', '.join(given)}: for a video output ({', '.join(sorted(VIDEO_EXTENSIONS))})")


def _check_tile(args: argparse.Namespace, model) -> int:
    """The smallest tile ``model`` can run (``--tile`` below it is an error)."""
    from reference_models.inference.upscale import minimum_tile

    need = minimum_tile(model)
    if args.tile is not None and args.tile < need:
        raise UserError(f"--tile must be >= {need} for {type(model).__name__} (its patch attention or image pyramid)")
    return max(MIN_TILE, need)


def _choose_precision(args: argparse.Namespace, model) -> str:
    """The ``precision`` of :func:`~reference_models.inference.upscale.upscale_frames` for this run; says which
    arithmetic it is and why (unless ``--quiet``)."""
    import torch

    if not isinstance(model, torch.nn.Module):  # an ONNX Runtime session runs float32
        return "float32"
    from reference_models.inference.precision import compute_dtype

    _, reason = compute_dtype(model, args.precision)
    if not args.quiet:
        print(f"precision: {reason}", file=sys.stderr)
    return args.precision


def _open_output(args: argparse.Namespace, source, scale: int):
    """The writer of ``args.output``, keeping a video input's timing and (unless --no-audio) its other streams."""
    from reference_models.io.video import VideoSource, open_writer

    video = isinstance(source, VideoSource)
    options = {"codec": args.codec, "crf": args.crf, "pix_fmt": args.pix_fmt}
    if args.fps is not None:
        fps = Fraction(args.fps).limit_denominator(1001)
    else:
        fps = source.fps
        if video:
            options.update(time_base=source.time_base, pts=source.pts)
    if video and not args.no_audio and source.side_streams:
        options["copy_from"] = source.path
        if args.fps is not None and fps != source.fps:
            warnings.warn("--fps changes the video's duration; its audio is copied as it is (--no-audio drops it)")
    resume_size = (scale * source.height, scale * source.width) if args.resume else None
    return open_writer(args.output, fps=fps, names=source.names, resume_size=resume_size, **options)


def _sequence_mode(args: argparse.Namespace, model, source) -> dict | None:
    """How a recurrent model runs: the options of a whole-sequence stream, or ``None`` for windows (segments of
    ``--max-seq-len``, or a model that is not recurrent); says which on stderr."""

    from reference_models.inference.memory_budget import default_budget, format_size, parse_size
    from reference_models.inference.streaming import is_recurrent

    name = type(model).__name__
    if not is_recurrent(model):
        if args.max_seq_len is not None:
            raise UserError(f"--max-seq-len applies to recurrent models (basicvsr, iconvsr, basicvsrpp), not {name}")
        return None
    if args.max_seq_len is not None:
        overlap = args.max_seq_len // 4 if args.seq_overlap is None else args.seq_overlap
        if not args.quiet:
            print(
                f"{name}: segments of {args.max_seq_len} frames overlapping by {overlap} (--max-seq-len): fast but "
                "approximate, less temporal context near the cuts; leave out --max-seq-len for the exact "
                "whole-sequence result",
                file=sys.stderr,
            )
        return None
    if args.tile is not None:
        raise UserError(
            "--tile: a recurrent model run as one sequence does not cut frames into tiles (its propagation carries "
            "features across the whole frame); add --max-seq-len N to run tiled segments (approximate)"
        )
    device = next(model.parameters()).device
    budget = parse_size(args.max_memory) if args.max_memory is not None else default_budget(device)
    pinned = (default_budget("cpu", 0.25) or 0) if device.type == "cuda" else 0
    spill_dir = args.spill_dir
    if spill_dir is not None and not Path(spill_dir).is_dir():
        raise UserError(f"--spill-dir '{spill_dir}' is not a folder")
    if not args.quiet:
        import tempfile

        where = spill_dir or tempfile.gettempdir()
        budget_text = format_size(budget) if budget is not None else "all"
        print(
            f"{name}: the whole input as one sequence of {len(source)} frames (exact); features beyond "
            f"{budget_text} (--max-memory) spill to '{where}'" + (" via pinned CPU memory" if pinned else ""),
            file=sys.stderr,
        )
    if args.compile:
        warnings.warn("--compile: a recurrent model run as one sequence streams eagerly (only its forward compiles)")
    return {
        "max_bytes": budget,
        "pinned_bytes": pinned,
        "spill_dir": spill_dir,
        "channels_last": True,
        "length": len(source),
    }


class _SweepBars:
    """One progress bar per sweep of a whole-sequence run, with the whole run's ETA beside it."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.sweep = 0
        self.seconds: dict[str, float] = {}  # per sweep, in order: where the time went
        self.started = 0.0

    def __call__(self, state) -> None:
        from tqdm.auto import tqdm

        if state.sweep != self.sweep:
            self.close()
            self.sweep = state.sweep
            self.seconds[state.branch] = 0.0
            self.started = time.perf_counter()
            self.bar = tqdm(
                total=state.frames,
                unit="frame",
                desc=f"sweep {state.sweep}/{state.sweeps} {state.branch}",
                disable=self.quiet,
                dynamic_ncols=True,
            )
        self.bar.update(state.done - self.bar.n)
        if state.eta is not None:
            self.bar.set_postfix_str(f"run ETA {_clock(state.eta)}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.seconds[next(reversed(self.seconds))] = time.perf_counter() - self.started

    def summary(self) -> str:
        """``; sweeps: backward 3.1 s, forward 4.2 s (...)``: the time of each sweep, for the summary line."""
        parts = [f"{branch} {seconds:.1f} s" for branch, seconds in self.seconds.items()]
        return f"; sweeps: {', '.join(parts)} (the last with reconstruction and writing)" if parts else ""


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _to_image(out, name: str):
    """The uint8 ``(H, W, 3)`` image of an SR frame; a non-finite value fails the run, naming the frame."""
    import torch

    if not torch.isfinite(out).all():
        raise UserError(
            f"the model's output for frame '{name}' is not finite (NaN or inf): the checkpoint holds broken "
            "weights, or the values overflow the --dtype"
        )
    return out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from reference_models.inference.upscale import upscale_frames
    from reference_models.io.video import open_frames

    _check_options(args)
    source = open_frames(args.input)
    if args.backend == "onnxruntime" or args.onnx_file:
        from reference_models.cli.export import onnx_run_model

        model = onnx_run_model(args.onnx_file, args.model, args.checkpoint, args.device, args.dtype)
    else:
        model = build_model(args)
    smallest_tile = _check_tile(args, model)
    stream_options = _sequence_mode(args, model, source)
    precision = _choose_precision(args, model)
    if (
        stream_options is None
        and args.tile is None
        and isinstance(model, torch.nn.Module)
        and any(True for _ in model.parameters())
    ):
        from reference_models.inference.memory_budget import automatic_tile

        args.tile = automatic_tile(
            model, source.height, source.width, args.batch, args.max_memory, minimum=smallest_tile
        )
        if args.tile is not None:
            args.tile_overlap = min(16, args.tile // 2)
    if args.compile:
        from reference_models.inference.compiled import compile_model

        if not args.quiet:
            print(
                "compiling the model (torch.compile, Inductor freezing): the first window of each size takes minutes",
                file=sys.stderr,
            )
        model = compile_model(model)
    scale = int(model.scale)
    start = time.perf_counter()
    frames = (torch.from_numpy(array).permute(2, 0, 1) for array in source)
    written = 0
    sweeps = _SweepBars(args.quiet) if stream_options is not None else None
    with (
        _open_output(args, source, scale) as writer,
        tqdm(total=len(source), unit="frame", disable=args.quiet or sweeps is not None, dynamic_ncols=True) as bar,
    ):
        done: set[str] = getattr(writer, "done", set())
        skip = {i for i, name in enumerate(source.names) if name in done}
        if stream_options is not None:
            # frames[i] from the source itself: a folder reads any frame again, a video is decoded once into the store
            outputs = upscale_frames(
                model, cast(Iterable[Any], source), skip=skip, report=sweeps, precision=precision, **stream_options
            )
        else:
            outputs = upscale_frames(
                model,
                frames,
                tile=args.tile,
                tile_overlap=args.tile_overlap or 0,
                batch=args.batch,
                skip=skip,
                max_seq_len=args.max_seq_len,
                seq_overlap=args.seq_overlap,
                precision=precision,
            )
        try:
            for name, out in zip(source.names, outputs):
                if out is not None:
                    writer.write(name, _to_image(out, name))
                    written += 1
                bar.update(1)
        finally:
            cast(
                Generator[Any, None, None], outputs
            ).close()  # stops a streaming worker (and removes its spill folder) before the writer aborts
            if sweeps is not None:
                sweeps.close()
    if not args.quiet:
        seconds = time.perf_counter() - start
        kept = f" (kept {len(skip)} finished frames)" if skip else ""
        print(
            f"wrote {written} frames of {scale * source.width}x{scale * source.height} to {args.output}{kept} "
            f"in {seconds:.1f} s ({written / seconds:.2f} frames/s){sweeps.summary() if sweeps else ''}",
            file=sys.stderr,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reference_models run ...``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from reference_models.io.video import VideoIOError
    from vsrblocks.checkpoint import CheckpointError

    with warnings.catch_warnings(), signals_interrupt():
        warnings.simplefilter("default")
        warnings.showwarning = print_warning
        try:
            return _run(args)
        except (UserError, CheckpointError, VideoIOError, ValueError, OSError, RuntimeError) as exc:
            message = " ".join(str(exc).split())
            if "out of memory" in message.lower():
                message = f"out of memory; try a smaller --tile (e.g. --tile 64) or --batch 1 ({message[:200]})"
            if args.resume:
                message += "; frames finished so far are kept for the next --resume"
            print(f"error: {message}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, Interrupted) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            kept = "frames finished so far are kept for the next --resume" if args.resume else "nothing was written"
            print(f"error: interrupted by {signal.Signals(signum).name}; {kept}", file=sys.stderr)
            return 128 + signum
