"""The command line: ``python -m reference_models SUBCOMMAND ...``.

One module per subcommand (:mod:`~reference_models.cli.run`, :mod:`~reference_models.cli.train`,
:mod:`~reference_models.cli.evaluate`, :mod:`~reference_models.cli.export`, :mod:`~reference_models.cli.demo`),
each with its own parser and ``main(argv)``, and :mod:`~reference_models.cli.options` for what they share. This
module only dispatches (after :func:`~reference_models.allocator.keep_freed_memory`), and lists the models; a subcommand's module is imported when it is asked for, so
``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reference_models.allocator import keep_freed_memory
from reference_models.cli.options import models_epilog
from reference_models.registry import list_models, list_presets

__all__ = ["main"]

SUBCOMMANDS = {
    "run": "super-resolve a folder of frames or a video file",
    "list": "list the models and their presets",
    "demo": "train a tiny model on a textured clip and show its results",
    "train": "train a reference model",
    "evaluate": "score a model or bicubic on Vid4, REDS4, Vimeo-90K-T (PSNR/SSIM)",
    "export": "export a model to ONNX, TorchScript or a torch.export program",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_models",
        description="Run, train, evaluate, export and demo the reference video super-resolution models.",
        epilog=models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, help_text in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _list() -> int:
    for name in list_models():
        try:
            presets = ", ".join(list_presets(name))
        except ImportError as exc:
            presets = f"(unavailable: {exc})"
        print(f"{name}: {presets}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m reference_models``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS and argv[0] != "list":
        if not {"-h", "--help"} & set(argv):
            keep_freed_memory()
        try:
            module = importlib.import_module(f"reference_models.cli.{argv[0]}")
        except ModuleNotFoundError as exc:
            print(f"error: '{argv[0]}' is not available: {exc}", file=sys.stderr)
            return 2
        result = module.main(argv[1:])
        return result if isinstance(result, int) else 0
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list()
    _parser().print_help()
    return 0
