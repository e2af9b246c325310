"""``python -m reference_models evaluate``: score a model, or the bicubic baseline, on a standard test set.

    python -m reference_models evaluate bicubic --dataset vid4 --root data/Vid4
    python -m reference_models evaluate mana --checkpoint mana.pth --dataset reds4 --root data/REDS
    python -m reference_models evaluate --checkpoint runs/mana/best.pt --dataset vid4 --root data/Vid4 --degradation bd

The protocol is :mod:`reference_models.evaluation.protocol`'s. Every failure the user can cause (a missing or
inconsistent dataset, a checkpoint of another model, a bad option) ends with one line ``error: ...`` on
stderr and exit status 1. Only ``argparse`` is imported until the command runs, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reference_models.data.catalog import EVAL_DATASETS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reference_models evaluate",
        description="Score a reference model, or the bicubic baseline, with the published protocol: PSNR and SSIM on "
        "the Y channel (BT.601) and RGB, per frame, averaged per clip; the dataset's score is the mean over clips.",
        epilog="Layouts under --root: vid4: GT/<clip>/ (+ BIx4/, BDx4/); reds4: train_sharp/{000,011,015,020}/ "
        "(+ train_sharp_bicubic/X4/); vimeo90k-t: sequences/<a>/<b>/im1..im7.png, sep_testlist.txt (+ BIx4/, BDx4/); "
        "folder: sub-folders of HR frames or video files. LR frames a dataset lacks are made with --degradation.",
    )
    from reference_models.cli.options import add_model_options

    add_model_options(p, "a reference model, or 'bicubic'; may be left out with a --checkpoint")
    p.add_argument("--dataset", required=True, choices=EVAL_DATASETS, help="the test set's layout")
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument(
        "--degradation",
        choices=["bi", "bd"],
        default="bi",
        help="bi: MATLAB bicubic (default); bd: Gaussian blur sigma 1.6, every 4th pixel",
    )
    p.add_argument("--output-json", help="write the scores to this JSON file")
    p.add_argument("--save-frames", help="write the 8-bit SR frames as PNG to DIR/<clip>/")
    p.add_argument("--tile", type=int, help="run spatial tiles of at most N x N LR pixels (bounds memory)")
    p.add_argument("--tile-overlap", type=int, default=16, help="overlap of tiles in LR pixels (default 16)")
    p.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--all-frames", action="store_true", help="vimeo90k-t: score all seven frames, not only im4")
    p.add_argument(
        "--crop-border",
        type=int,
        default=0,
        help="border pixels ignored by the metrics (default 0, as BasicVSR's tables)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def _upscaler(args: argparse.Namespace, scale: int):
    """The upscaler and the name the result gives it."""
    from reference_models.evaluation.protocol import bicubic_upscaler

    if args.model == "bicubic":
        if args.checkpoint:
            raise ValueError("the bicubic baseline takes no --checkpoint")
        return bicubic_upscaler(scale), "bicubic"
    from reference_models.cli.options import build_model
    from reference_models.inference.upscale import upscale_frames
    from reference_models.registry import model_spec

    model = build_model(args)
    if model.scale != scale:
        raise ValueError(f"the model upscales x{model.scale}, the dataset's LR frames are x{scale}")
    spec = model_spec(model) or {}
    name = spec.get("name") or args.model or type(model).__name__
    preset = spec.get("preset") or args.preset
    if preset:
        name = f"{name} ({preset})"

    def upscale(frames):
        return upscale_frames(model, frames, tile=args.tile, tile_overlap=args.tile_overlap, batch=args.batch)

    return upscale, name


def _evaluate(args: argparse.Namespace) -> int:
    from reference_models.data.catalog import open_dataset
    from reference_models.evaluation.protocol import evaluate_dataset
    from reference_models.evaluation.table import markdown_table

    if args.crop_border < 0:
        raise ValueError(f"--crop-border must be >= 0, got {args.crop_border}")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile must be >= 1, got {args.tile}")
    if args.tile is not None and not 0 <= args.tile_overlap < args.tile:
        raise ValueError(f"--tile-overlap must be in [0, --tile={args.tile}), got {args.tile_overlap}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    dataset = open_dataset(args.dataset, args.root, degradation=args.degradation, cache_bytes=0)
    upscaler, name = _upscaler(args, dataset.scale)
    print(
        f"{dataset.name}: {len(dataset.hr)} clips, {sum(len(c) for c in dataset.hr)} frames; {dataset.describe_lr(args.degradation)}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    result = evaluate_dataset(
        dataset,
        upscaler,
        name,
        degradation=args.degradation,
        crop_border=args.crop_border,
        all_frames=args.all_frames,
        save_frames=args.save_frames,
        progress=not args.quiet,
    )
    print(markdown_table(result))
    print(f"evaluated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``evaluate`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    if not args.model and not args.checkpoint:
        print("error: name a model (or 'bicubic'), or give a --checkpoint saved by this package", file=sys.stderr)
        return 1
    from reference_models.cli.options import run_reporting_errors

    return run_reporting_errors(lambda: _evaluate(args))
