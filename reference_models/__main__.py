"""Command line of the reference models.

    python -m reference_models run MODEL --input PATH --output DIR --checkpoint FILE [--preset NAME]
        [--tile N] [--tile-overlap N] [--max-memory SIZE] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--batch N]
        [--resume]
    python -m reference_models run --checkpoint FILE --input in.mp4 --output out.mp4 [--codec NAME] [--crf N]
        [--pix-fmt NAME] [--no-audio]
    python -m reference_models list
    python -m reference_models demo [...]
    python -m reference_models train [...]
    python -m reference_models export [...]
    python -m reference_models run --backend onnxruntime --model FILE.onnx --input PATH --output OUT

Every failure the user can cause (missing or corrupt checkpoint, checkpoint of another model, unreadable
input, empty folder, bad option, non-finite model output) ends with one line ``error: ...`` on stderr and exit
status 1. Output is written under a partial name and only moved into place when every frame is done; SIGINT
and SIGTERM remove the partial output and exit 130 / 143 (a ``--resume`` run keeps its finished frames for the
next ``--resume``), and partials of runs that were killed outright are removed (or resumed) by the next run
into the same output. Torch is imported only when a model runs, so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from reference_models.registry import list_models, list_presets

__all__ = ["main"]

_DELEGATED = {
    "demo": "reference_models.demo",
    "train": "reference_models.training.cli",
    "evaluate": "reference_models.evaluation.cli",
    "export": "reference_models.export.cli",
}
# Below 16 LR pixels a tile costs a whole forward pass for a few pixels (--tile 1 ran for hours).
MIN_TILE = 16
MIN_FPS, MAX_FPS = 0.01, 1000.0


def _models_epilog() -> str:
    return (
        f"models: {', '.join(list_models())} (presets: python -m reference_models list)\n"
        "subcommands demo, train and evaluate take their own options: python -m reference_models evaluate --help"
    )


def add_model_options(parser: argparse.ArgumentParser, model_help: str = "") -> None:
    """The options that pick a model and its weights, shared by ``run``, ``evaluate`` and ``export``
    (read by :func:`_build_model`)."""
    parser.add_argument(
        "model", nargs="?",
        help=model_help or "model name; may be left out with a --checkpoint (ours, or an official MANA/VSRT file)",
    )
    parser.add_argument("--checkpoint", help="weights: our checkpoint (rebuilds the model) or a plain/official state_dict")
    parser.add_argument("--preset", help="model preset (default: the checkpoint's, else 'paper')")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="constructor argument, repeatable; for an official checkpoint an official setting (num_frame=7)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="without --checkpoint, use random weights (smoke tests only)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_models",
        description="Run, train and demo the reference video super-resolution models.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,list,demo,train,evaluate,export}")
    run = sub.add_parser(
        "run",
        help="super-resolve a folder of frames or a video file",
        description="Super-resolve a folder of frames (png/jpg, natural order) or a video file. Output: PNG "
        "frames with the input names in a folder, or a video when OUTPUT has a video extension (.mp4, .mkv ...).",
        epilog=_models_epilog(),
    )
    add_model_options(run)
    run.add_argument("--input", "-i", required=True, help="folder of frames or video file")
    run.add_argument("--output", "-o", required=True, help="output folder, or a video file (.mp4, .mkv, ...)")
    run.add_argument(
        "--tile", type=int,
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
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    run.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    run.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    run.add_argument(
        "--fps", type=float,
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
        "--resume", action="store_true",
        help="folder output: skip frames already written there (complete PNGs of the right size) or left by an "
        "interrupted --resume run",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    run.add_argument("--backend", choices=["pytorch", "onnxruntime"], default="pytorch",
                     help="onnxruntime: run an exported --model FILE.onnx (python -m reference_models export)")
    run.add_argument("--model", dest="onnx_file", metavar="FILE.onnx", help="the exported model of --backend onnxruntime")
    run.add_argument(
        "--compile", action="store_true",
        help="torch.compile the model with Inductor freezing (faster convolutions; the first window at each new "
        "size compiles for minutes: worth it for long videos)",
    )
    sub.add_parser("list", help="list the models and their presets")
    sub.add_parser("demo", help="train a tiny model on a textured clip and show its results", add_help=False)
    sub.add_parser("train", help="train a reference model", add_help=False)
    sub.add_parser("evaluate", help="score a model or bicubic on Vid4, REDS4, Vimeo-90K-T (PSNR/SSIM)", add_help=False)
    sub.add_parser("export", help="export a model to ONNX, TorchScript or a torch.export program", add_help=False)
    return parser


class _UserError(Exception):
    """A failure to report as one line."""


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_reporting_errors(action: Callable[[], int]) -> int:
    """Run a subcommand (``evaluate``, ``export``): each warning as one ``warning:`` line, a failure the user can
    cause as one ``error:`` line and status 1, Ctrl-C as status 130."""
    from reference_models.video_io import VideoIOError
    from vsrblocks.checkpoint import CheckpointError

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _print_warning
        try:
            return action()
        except (_UserError, CheckpointError, VideoIOError, ValueError, OSError, RuntimeError) as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130


def _build_model(args: argparse.Namespace, **overrides):
    """The model the options of :func:`add_model_options` name; ``overrides`` beside ``--model-arg``."""
    import torch

    from reference_models.checkpoint import build_from_checkpoint
    from reference_models.registry import create_model, parse_model_args

    overrides = {**parse_model_args(args.model_arg), **overrides}
    if args.checkpoint:
        # an official file gets one line saying what was read off its weights and what the paper supplied
        report = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
        model = build_from_checkpoint(
            args.checkpoint, args.model, args.preset, report=report, **overrides
        )
    else:
        if not args.model:
            raise _UserError(
                "name the model (run MODEL ...) or give a --checkpoint (ours or an official MANA/VSRT file); "
                f"models: {', '.join(list_models())}"
            )
        if not args.random_weights:
            presets = list_presets(args.model)  # an unknown model or preset is the first thing to report
            if args.preset and args.preset not in presets:
                raise _UserError(f"unknown preset {args.preset!r} for model {args.model!r}; available: {', '.join(presets)}")
            raise _UserError(
                "no --checkpoint: pass the model's weights (or --random-weights for a smoke test; its output is noise)"
            )
        model = create_model(args.model, args.preset or "paper", **overrides)
        warnings.warn("--random-weights: the model runs with random weights")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise _UserError("--device cuda: CUDA is not available on this machine")
    return model.eval().to(device=device, dtype=getattr(torch, args.dtype))


def _check_options(args: argparse.Namespace) -> None:
    """The option errors found without reading anything."""
    if args.batch < 1:
        raise _UserError(f"--batch must be >= 1, got {args.batch}")
    if args.compile and (args.backend == "onnxruntime" or args.onnx_file):
        raise _UserError("--compile compiles a PyTorch model; it does not apply to --backend onnxruntime")
    if args.fps is not None and not MIN_FPS <= args.fps <= MAX_FPS:  # also rejects nan and inf
        raise _UserError(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {args.fps:g}")
    if args.tile is not None and args.tile < MIN_TILE:
        raise _UserError(f"--tile must be >= {MIN_TILE}, got {args.tile}")
    if args.tile is not None and args.tile_overlap is None:
        args.tile_overlap = min(16, args.tile // 2)
    if args.tile is not None and not 0 <= args.tile_overlap <= args.tile // 2:
        raise _UserError(f"--tile-overlap must be in [0, --tile/2 = {args.tile // 2}], got {args.tile_overlap}")
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise _UserError("--output must differ from --input")
    from reference_models.video_io import VIDEO_EXTENSIONS

    if Path(args.output).suffix.lower() not in VIDEO_EXTENSIONS:
        options = (("--codec", args.codec), ("--crf", args.crf), ("--pix-fmt", args.pix_fmt))
        given = [flag for flag, value in options if value is not None]
        if given:
            raise _UserError(f"{', '.join(given)}: for a video output ({', '.join(sorted(VIDEO_EXTENSIONS))})")


def _check_tile(args: argparse.Namespace, model) -> int:
    """The smallest tile ``model`` can run (``--tile`` below it is an error)."""
    from reference_models.inference import minimum_tile

    need = minimum_tile(model)
    if args.tile is not None and args.tile < need:
        raise _UserError(f"--tile must be >= {need} for {type(model).__name__} (its patch attention or image pyramid)")
    return max(MIN_TILE, need)


def _open_output(args: argparse.Namespace, source, scale: int):
    """The writer of ``args.output``, keeping a video input's timing and (unless --no-audio) its other streams."""
    from reference_models.video_io import VideoSource, open_writer

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


def _to_image(out, name: str):
    """The uint8 ``(H, W, 3)`` image of an SR frame; a non-finite value fails the run, naming the frame."""
    import torch

    if not torch.isfinite(out).all():
        raise _UserError(
            f"the model's output for frame '{name}' is not finite (NaN or inf): the checkpoint holds broken "
            "weights, or the values overflow the --dtype"
        )
    return out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from reference_models.inference import upscale_frames
    from reference_models.video_io import open_frames

    _check_options(args)
    source = open_frames(args.input)
    if args.backend == "onnxruntime" or args.onnx_file:
        from reference_models.export.cli import onnx_run_model

        model = onnx_run_model(args.onnx_file, args.model, args.checkpoint, args.device, args.dtype)
    else:
        model = _build_model(args)
    smallest_tile = _check_tile(args, model)
    if args.tile is None and isinstance(model, torch.nn.Module) and any(True for _ in model.parameters()):
        from reference_models.memory_budget import automatic_tile

        args.tile = automatic_tile(
            model, source.height, source.width, args.batch, args.max_memory, minimum=smallest_tile
        )
        if args.tile is not None:
            args.tile_overlap = min(16, args.tile // 2)
    if args.compile:
        from reference_models.compiled import compile_model

        if not args.quiet:
            print("compiling the model (torch.compile, Inductor freezing): the first window of each size takes "
                  "minutes", file=sys.stderr)
        model = compile_model(model)
    scale = int(model.scale)
    start = time.perf_counter()
    frames = (torch.from_numpy(array).permute(2, 0, 1) for array in source)
    written = 0
    with _open_output(args, source, scale) as writer, tqdm(
        total=len(source), unit="frame", disable=args.quiet, dynamic_ncols=True
    ) as bar:
        done = getattr(writer, "done", set())
        skip = {i for i, name in enumerate(source.names) if name in done}
        outputs = upscale_frames(
            model, frames, tile=args.tile, tile_overlap=args.tile_overlap or 0, batch=args.batch, skip=skip
        )
        for name, out in zip(source.names, outputs):
            if out is not None:
                writer.write(name, _to_image(out, name))
                written += 1
            bar.update(1)
    if not args.quiet:
        seconds = time.perf_counter() - start
        kept = f" (kept {len(skip)} finished frames)" if skip else ""
        print(
            f"wrote {written} frames of {scale * source.width}x{scale * source.height} to {args.output}{kept} "
            f"in {seconds:.1f} s ({written / seconds:.2f} frames/s)",
            file=sys.stderr,
        )
    return 0


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt, so that writers remove their partials."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    # Ignore further signals, so that a second Ctrl-C cannot cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise _Interrupted(signum)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Interrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _list() -> int:
    for name in list_models():
        try:
            presets = ", ".join(list_presets(name))
        except ImportError as exc:
            presets = f"(unavailable: {exc})"
        print(f"{name}: {presets}")
    return 0


def _delegate(command: str, argv: list[str]) -> int:
    module_name = _DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"error: '{command}' is not available: {exc}", file=sys.stderr)
        return 2
    result = module.main(argv)
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m reference_models``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "list":
        return _list()
    from reference_models.video_io import VideoIOError
    from vsrblocks.checkpoint import CheckpointError

    with warnings.catch_warnings(), _signals_interrupt():
        warnings.simplefilter("default")
        warnings.showwarning = _print_warning
        try:
            return _run(args)
        except (_UserError, CheckpointError, VideoIOError, ValueError, OSError, RuntimeError) as exc:
            message = " ".join(str(exc).split())
            if "out of memory" in message.lower():
                message = f"out of memory; try a smaller --tile (e.g. --tile 64) or --batch 1 ({message[:200]})"
            if args.resume:
                message += "; frames finished so far are kept for the next --resume"
            print(f"error: {message}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, _Interrupted) as exc:
            signum = exc.signum if isinstance(exc, _Interrupted) else signal.SIGINT
            kept = "frames finished so far are kept for the next --resume" if args.resume else "nothing was written"
            print(f"error: interrupted by {signal.Signals(signum).name}; {kept}", file=sys.stderr)
            return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
