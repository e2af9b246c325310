"""``python -m reference_models export``: write a reference model as ONNX, TorchScript or an exported program.

    python -m reference_models export MODEL [--preset P] [--checkpoint FILE] --format onnx --output model.onnx
    python -m reference_models export --checkpoint ours.pt --format exported-program --output model.pt2

torch is imported only when an export runs, so ``--help`` is fast. User-caused failures end with one line
``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from reference_models.cli.options import UserError

__all__ = ["main", "FORMATS", "onnx_run_model"]

FORMATS = ("onnx", "torchscript", "exported-program")
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "exported-program": ".pt2"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_models export",
        description="Export a reference model for deployment. onnx and exported-program files take any batch, "
        "height and width (within the constraints printed at export); torchscript is traced at --height x --width.",
    )
    from reference_models.cli.options import add_model_options

    add_model_options(parser)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", "-o", required=True, help=f"file to write ({', '.join(_SUFFIXES.values())})")
    parser.add_argument("--frames", type=int, help="input frames of the exported model (default: the preset's)")
    parser.add_argument("--opset", type=int, help="ONNX opset (onnx only; default 18)")
    parser.add_argument("--height", type=int, default=34, help="LR height of the example clip (default 34)")
    parser.add_argument("--width", type=int, default=38, help="LR width of the example clip (default 38)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    return parser


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reference_models.export.exported_program import example_clip, export_program, save_program, size_constraints
    from reference_models.export.metadata import model_metadata
    from reference_models.export.onnx import DEFAULT_OPSET, export_onnx
    from reference_models.export.torchscript import export_torchscript

    if args.opset is not None and args.format != "onnx":
        raise UserError("--opset applies to --format onnx only")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    if min(args.height, args.width) < 1:
        raise UserError(f"--height and --width must be >= 1, got {args.height} x {args.width}")
    output = Path(args.output)
    if output.suffix != _SUFFIXES[args.format]:
        warnings.warn(
            f"--format {args.format} files usually end in {_SUFFIXES[args.format]}, not {output.suffix or '(none)'}"
        )
    if not output.parent.is_dir():
        raise UserError(f"--output: folder '{output.parent}' does not exist")
    from reference_models.cli.options import build_model

    args.device, args.dtype = "cpu", "float32"
    model = build_model(args, **({} if args.frames is None else {"num_frames": args.frames}))
    example = example_clip(model, args.height, args.width)
    start = time.perf_counter()
    if args.format == "onnx":
        metadata = export_onnx(model, output, example=example, opset=args.opset or DEFAULT_OPSET)
    elif args.format == "torchscript":
        metadata = export_torchscript(model, output, example=example)
    else:
        program = export_program(model, example)
        metadata = model_metadata(
            model, input_sizes=", ".join(f"{k}: {v}" for k, v in size_constraints(program).items())
        )
        save_program(program, output, metadata)
    if not args.quiet:
        print(
            f"wrote {output} ({args.format}, {output.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.0f} s; "
            f"input lr (B, T, 3, H, W): {metadata['input_sizes']}",
            file=sys.stderr,
        )
    return 0


def onnx_run_model(onnx_file: str | None, model: str | None, checkpoint: str | None, device: str | None, dtype: str):
    """The model ``run --backend onnxruntime --model FILE.onnx`` runs, after checking the options fit.

    Raises:
        ValueError: a missing ``--model`` file, or options that apply to PyTorch models only.
    """
    from reference_models.export.onnx_runtime import OnnxRuntimeModel

    if not onnx_file:
        raise ValueError(
            "--backend onnxruntime needs --model FILE.onnx (python -m reference_models export ... --format onnx)"
        )
    if model or checkpoint:
        raise ValueError(
            "--backend onnxruntime runs the exported --model FILE.onnx; leave out the model name and --checkpoint"
        )
    if device == "cuda" or dtype != "float32":
        raise ValueError("--backend onnxruntime runs on the CPU in float32; leave out --device cuda and --dtype")
    return OnnxRuntimeModel(onnx_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m reference_models export``; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from reference_models.cli.options import run_reporting_errors

    return run_reporting_errors(lambda: _export(args))


if __name__ == "__main__":
    sys.exit(main())
