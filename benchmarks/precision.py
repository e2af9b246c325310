"""bfloat16 against float32 for every reference model at its paper preset: accuracy (PSNR) and speed, one table.

    python benchmarks/precision.py                         # every model, paper preset, 32x32 LR, 2 interleaved reps
    python benchmarks/precision.py --models vsrt mana --size 64x64 --reps 3

Each model is built with seed 0 and its last convolution (``conv_last``, or the x4 tail's) scaled so that the residual over the
bilinear/bicubic base has std 0.1, as a trained network's: random weights leave VSRT's at 1.9, and an output that
is mostly residual noise would measure the rounding of noise, not of an image. The input is a smooth clip
(bicubic enlargements of coarse noise) of the model's frame count. bfloat16 runs as ``upscale_frames(...,
precision="bfloat16")`` runs it: the weights held in bfloat16 across the passes
(:func:`~reference_models.inference.precision.low_precision_weights`) and every pass under
:func:`~reference_models.inference.precision.mixed_precision`. PSNR is that of the bfloat16 output against the
float32 output (peak 1); the speed-up is float32 time / bfloat16 time, each the best of ``--reps`` passes taken
in turns (float32, bfloat16, float32, ...) after one warm-up each, so that the load of a shared machine hits both.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import machine_line

import reference_models
from reference_models.inference.precision import (
    float32_islands,
    low_precision_weights,
    mixed_precision,
    resolve_precision,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the tests' clip and scaling

from tests.reference_models.helpers import image_like_clip, scale_last_conv  # noqa: E402

RESIDUAL_STD = 0.1


def measure(name: str, preset: str, height: int, width: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = reference_models.create_model(name, preset).eval()
    clip = image_like_clip(model.num_frames, height, width)
    raw_std = scale_last_conv(model, clip, RESIDUAL_STD)
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    outputs = {}
    with torch.no_grad():
        for rep in range(reps + 1):  # rep 0 warms up
            start = time.perf_counter()
            outputs["float32"] = model(clip)
            if rep:
                times["float32"].append(time.perf_counter() - start)
            with low_precision_weights(model):  # as upscale_frames: cast once, outside the timed pass
                start = time.perf_counter()
                with mixed_precision(model):
                    outputs["bfloat16"] = model(clip)
                if rep:
                    times["bfloat16"].append(time.perf_counter() - start)
    mse = (outputs["bfloat16"].double() - outputs["float32"].double()).pow(2).mean().item()
    return {
        "raw_std": raw_std,
        "psnr": 10 * math.log10(1 / mse) if mse > 0 else math.inf,
        "fp32": min(times["float32"]),
        "bf16": min(times["bfloat16"]),
        "fp32_median": statistics.median(times["float32"]),
        "bf16_median": statistics.median(times["bfloat16"]),
        "islands": len(float32_islands(model)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=reference_models.list_models())
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", default="32x32", help="LR frame size HxW")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    print(machine_line())
    print(f"# --precision auto here: {resolve_precision('auto', 'cpu')[1]}")
    print(
        f"# preset {args.preset}, LR {height}x{width}, batch 1, conv_last scaled to residual std {RESIDUAL_STD}, "
        f"best of {args.reps} interleaved passes (median in brackets)"
    )
    print(
        "| model | frames | residual std before scaling | float32 islands | PSNR bf16 vs fp32 (dB) | fp32 s | bf16 s "
        "| speed-up fp32/bf16 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        frames = reference_models.create_model(name, args.preset).num_frames
        r = measure(name, args.preset, height, width, args.reps)
        print(
            f"| {name} | {frames} | {r['raw_std']:.2f} | {r['islands']} | {r['psnr']:.1f} | {r['fp32']:.2f} "
            f"({r['fp32_median']:.2f}) | {r['bf16']:.2f} ({r['bf16_median']:.2f}) | {r['fp32'] / r['bf16']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
