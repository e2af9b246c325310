"""What the subcommands share: the options that pick a model and its weights, building that model, and
reporting a failure the user caused as one ``error:`` line.

Only ``argparse`` and the standard library are imported here; torch is imported once a model is built, so
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reference_models.registry import list_models, list_presets

__all__ = [
    "Interrupted",
    "UserError",
    "add_model_options",
    "build_model",
    "models_epilog",
    "print_warning",
    "run_reporting_errors",
    "signals_interrupt",
]


def models_epilog() -> str:
    return (
        f"models: {', '.join(list_models())} (presets: python -m reference_models list)\n"
        "subcommands demo, train and evaluate take their own options: python -m reference_models evaluate --help"
    )


def add_model_options(parser: argparse.ArgumentParser, model_help: str = "") -> None:
    """The options that pick a model and its weights, shared by ``run``, ``evaluate`` and ``export``
    (read by :func:`build_model`)."""
    parser.add_argument(
        "model",
        nargs="?",
        help=model_help or "model name; may be left out with a --checkpoint (ours, or an official MANA/VSRT file)",
    )
    parser.add_argument(
        "--checkpoint", help="weights: our checkpoint (rebuilds the model) or a plain/official state_dict"
    )
    parser.add_argument("--preset", help="model preset (default: the checkpoint's, else 'paper')")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument, repeatable; for an official checkpoint an official setting (num_frame=7)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="without --checkpoint, use random weights (smoke tests only)"
    )


class UserError(Exception):
    """A failure to report as one line."""


def print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_reporting_errors(action: Callable[[], int]) -> int:
    """Run a subcommand (``evaluate``, ``export``): each warning as one ``warning:`` line, a failure the user can
    cause as one ``error:`` line and status 1, Ctrl-C as status 130."""
    from reference_models.io.video import VideoIOError
    from vsrblocks.checkpoint import CheckpointError

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = print_warning
        try:
            return action()
        except (UserError, CheckpointError, VideoIOError, ValueError, OSError, RuntimeError) as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130


def build_model(args: argparse.Namespace, **overrides):
    """The model the options of :func:`add_model_options` name; ``overrides`` beside ``--model-arg``."""
    import torch

    from reference_models.checkpoint import build_from_checkpoint
    from reference_models.registry import create_model, parse_model_args

    overrides = {**parse_model_args(args.model_arg), **overrides}
    if args.checkpoint:
        # an official file gets one line saying what was read off its weights and what the paper supplied
        report = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
        model = build_from_checkpoint(args.checkpoint, args.model, args.preset, report=report, **overrides)
    else:
        if not args.model:
            raise UserError(
                "name the model (run MODEL ...) or give a --checkpoint (ours or an official MANA/VSRT file); "
                f"models: {', '.join(list_models())}"
            )
        if not args.random_weights:
            presets = list_presets(args.model)  # an unknown model or preset is the first thing to report
            if args.preset and args.preset not in presets:
                raise UserError(
                    f"unknown preset {args.preset!r} for model {args.model!r}; available: {', '.join(presets)}"
                )
            raise UserError(
                "no --checkpoint: pass the model's weights (or --random-weights for a smoke test; its output is noise)"
            )
        model = create_model(args.model, args.preset or "paper", **overrides)
        warnings.warn("--random-weights: the model runs with random weights")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    return model.eval().to(device=device, dtype=getattr(torch, args.dtype))


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt, so that writers remove their partials."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    # Ignore further signals, so that a second Ctrl-C cannot cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
