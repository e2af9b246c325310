"""Command line of the reference models.

    python -m reference_models run MODEL --input PATH --output DIR [--checkpoint FILE] [--preset NAME]
        [--tile N] [--tile-overlap N] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--batch N]
    python -m reference_models run --checkpoint FILE --input PATH --output out.mp4
    python -m reference_models list
    python -m reference_models demo [...]
    python -m reference_models train [...]
    python -m reference_models export [...]
    python -m reference_models run --backend onnxruntime --model FILE.onnx --input PATH --output OUT

Every failure the user can cause (missing or corrupt checkpoint, checkpoint of another model, unreadable
input, empty folder, bad option) ends with one line ``error: ...`` on stderr and exit status 1; output is
written under a temporary name and only moved into place when every frame is done.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from reference_models.registry import list_models, list_presets

__all__ = ["main"]

_DELEGATED = {
    "demo": "reference_models.demo",
    "train": "reference_models.training.cli",
    "export": "reference_models.export.cli",
}


def _models_epilog() -> str:
    return (
        f"models: {', '.join(list_models())} (presets: python -m reference_models list)\n"
        "subcommands demo and train take their own options: python -m reference_models demo --help"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_models",
        description="Run, train and demo the reference video super-resolution models.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,list,demo,train,export}")
    run = sub.add_parser(
        "run",
        help="super-resolve a folder of frames or a video file",
        description="Super-resolve a folder of frames (png/jpg, natural order) or a video file. Output: PNG "
        "frames with the input names in a folder, or a video when OUTPUT has a video extension (.mp4, .mkv ...).",
        epilog=_models_epilog(),
    )
    run.add_argument("model", nargs="?", help="model name; may be left out with a --checkpoint saved by this package")
    run.add_argument("--input", "-i", required=True, help="folder of frames or video file")
    run.add_argument("--output", "-o", required=True, help="output folder, or a video file (.mp4, .mkv, ...)")
    run.add_argument("--checkpoint", help="weights: our checkpoint (rebuilds the model) or a plain/official state_dict")
    run.add_argument("--preset", help="model preset (default: the checkpoint's, else 'paper')")
    run.add_argument("--tile", type=int, help="run spatial tiles of at most N x N LR pixels (bounds memory)")
    run.add_argument("--tile-overlap", type=int, default=16, help="overlap of tiles in LR pixels (default 16)")
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    run.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    run.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    run.add_argument("--fps", type=float, help="frame rate of a video output (default: the input's, else 25)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    run.add_argument("--backend", choices=["pytorch", "onnxruntime"], default="pytorch",
                     help="onnxruntime: run an exported --model FILE.onnx (python -m reference_models export)")
    run.add_argument("--model", dest="onnx_file", metavar="FILE.onnx", help="the exported model of --backend onnxruntime")
    sub.add_parser("list", help="list the models and their presets")
    sub.add_parser("demo", help="train a tiny model on a textured clip and show its results", add_help=False)
    sub.add_parser("train", help="train a reference model", add_help=False)
    sub.add_parser("export", help="export a model to ONNX, TorchScript or a torch.export program", add_help=False)
    return parser


class _UserError(Exception):
    """A failure to report as one line."""


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _build_model(args: argparse.Namespace, **overrides):
    import torch

    from reference_models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, read_checkpoint
    from reference_models.registry import create_model

    spec = None
    if args.checkpoint:
        try:
            spec = read_checkpoint(args.checkpoint).get("model_spec")
        except CheckpointError as exc:
            if "not a reference_models checkpoint" not in str(exc):
                raise
    if spec:
        if args.model and args.model != spec["name"]:
            raise _UserError(f"checkpoint '{args.checkpoint}' holds a {spec['name']} model, not {args.model}")
        if args.preset and args.preset != spec["preset"]:
            raise _UserError(f"checkpoint '{args.checkpoint}' holds preset {spec['preset']!r}, not {args.preset!r}")
        model = model_from_checkpoint(args.checkpoint, **overrides)
    else:
        if not args.model:
            raise _UserError(
                "name the model (run MODEL ...) unless --checkpoint is a checkpoint saved by this package; "
                f"models: {', '.join(list_models())}"
            )
        model = create_model(args.model, args.preset or "paper", **overrides)
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        else:
            warnings.warn("no --checkpoint: the model runs with random weights")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise _UserError("--device cuda: CUDA is not available on this machine")
    return model.eval().to(device=device, dtype=getattr(torch, args.dtype))


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from reference_models.inference import upscale_frames
    from reference_models.video_io import open_frames, open_writer

    if args.batch < 1:
        raise _UserError(f"--batch must be >= 1, got {args.batch}")
    if args.fps is not None and not args.fps > 0:
        raise _UserError(f"--fps must be positive, got {args.fps:g}")
    if args.tile is not None and args.tile < 1:
        raise _UserError(f"--tile must be >= 1, got {args.tile}")
    if args.tile is not None and not 0 <= args.tile_overlap < args.tile:
        raise _UserError(f"--tile-overlap must be in [0, --tile={args.tile}), got {args.tile_overlap}")
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise _UserError("--output must differ from --input")
    source = open_frames(args.input)
    if args.backend == "onnxruntime" or args.onnx_file:
        from reference_models.export.cli import onnx_run_model

        model = onnx_run_model(args.onnx_file, args.model, args.checkpoint, args.device, args.dtype)
    else:
        model = _build_model(args)
    fps = source.fps if args.fps is None else Fraction(args.fps).limit_denominator(1001)
    start = time.perf_counter()
    frames = (torch.from_numpy(array).permute(2, 0, 1) for array in source)
    outputs = upscale_frames(model, frames, tile=args.tile, tile_overlap=args.tile_overlap, batch=args.batch)
    with open_writer(args.output, fps=fps) as writer, tqdm(
        total=len(source), unit="frame", disable=args.quiet, dynamic_ncols=True
    ) as bar:
        for name, out in zip(source.names, outputs):
            image = out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            writer.write(name, image)
            bar.update(1)
    if not args.quiet:
        seconds = time.perf_counter() - start
        print(
            f"wrote {len(source)} frames of {image.shape[1]}x{image.shape[0]} to {args.output} "
            f"in {seconds:.1f} s ({len(source) / seconds:.2f} frames/s)",
            file=sys.stderr,
        )
    return 0


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

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _print_warning
        try:
            return _run(args)
        except (_UserError, CheckpointError, VideoIOError, ValueError, OSError, RuntimeError) as exc:
            message = " ".join(str(exc).split())
            if "out of memory" in message.lower():
                message = f"out of memory; try a smaller --tile (e.g. --tile 64) or --batch 1 ({message[:200]})"
            print(f"error: {message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted; nothing was written", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
