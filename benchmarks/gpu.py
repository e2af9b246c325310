"""The reference models on a CUDA GPU: fp32, bf16 autocast, channels-last and compiled, one table. A script, not a test.

    python benchmarks/gpu.py               # MANA and VSRT paper presets at 180x320 (REDS) and 64x112 (Vimeo) LR
    python benchmarks/gpu.py --quick       # 64x112 only, 1 timed pass, no compiled variant
    python benchmarks/gpu.py --models mana dasaa --sizes 64x112

Per (model, LR size, variant): milliseconds per output frame (median of ``--reps`` passes after ``--warmup``,
``torch.cuda.synchronize`` around each), peak memory of the passes (``torch.cuda.max_memory_allocated`` above what
the model and input hold) and, for the bf16 variant, the largest absolute difference to the fp32 output and the
PSNR between them. TF32 is off, so "fp32" is fp32. Variants:

- ``fp32``          -- the model as built;
- ``bf16``          -- the same under ``torch.autocast("cuda", torch.bfloat16)``;
- ``channels_last`` -- fp32, the model's weights and the input in channels-last memory format;
- ``compiled``      -- fp32, ``torch.compile(model)`` (the compile time is printed separately, not in ms/frame).

Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

import reference_models  # noqa: E402

VARIANTS = ("fp32", "bf16", "channels_last", "compiled")


def _timed(fn, reps: int, warmup: int) -> tuple[float, float, torch.Tensor]:
    """(median seconds, peak MiB above the start, last output) of ``reps`` calls after ``warmup`` untimed ones."""
    out = None
    for _ in range(warmup):
        out = fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20, out


def run_model(name: str, preset: str, height: int, width: int, variants: list[str], reps: int, warmup: int) -> None:
    torch.manual_seed(0)
    model = reference_models.create_model(name, preset).eval().cuda()
    clip = torch.rand(1, model.num_frames, 3, height, width, device="cuda")
    outputs = model.num_frames if model.output_mode == "all" else 1
    reference = None
    for variant in variants:
        note = ""
        with torch.inference_mode():
            if variant == "fp32":
                fn = lambda: model(clip)  # noqa: E731
            elif variant == "bf16":

                def fn():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        return model(clip)
            elif variant == "channels_last":
                cl_model = model.to(memory_format=torch.channels_last)
                flat = clip.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, clip.shape[:2])
                fn = lambda: cl_model(flat)  # noqa: E731
            else:
                compiled = torch.compile(model)
                start = time.perf_counter()
                compiled(clip)
                torch.cuda.synchronize()
                note = f"compile + first pass {time.perf_counter() - start:.0f} s"
                fn = lambda: compiled(clip)  # noqa: E731
            try:
                seconds, peak, out = _timed(fn, reps, warmup)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"| {name:5s} | {height}x{width:<7d} | {variant:13s} | out of memory |")
                continue
        out = out.float()
        if variant == "fp32":
            reference = out
        elif reference is not None:
            diff = (out - reference).abs().max().item()
            mse = (out - reference).square().mean().item()
            psnr = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
            note = (note + "; " if note else "") + f"vs fp32: max |diff| {diff:.2e}, PSNR {psnr:.1f} dB"
        print(
            f"| {name:5s} | {height}x{width:<7d} | {variant:13s} | {1000 * seconds / outputs:9.2f} | {peak:9.0f} | {note} |"
        )
        sys.stdout.flush()
        model.to(memory_format=torch.contiguous_format)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["mana", "vsrt"])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--sizes", nargs="*", default=["180x320", "64x112"], help="LR sizes HxW")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="64x112 only, 1 timed pass, no compiled variant")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing measured")
        return 0
    if args.quick:
        args.sizes, args.reps, args.warmup = ["64x112"], 1, 1
        args.variants = [v for v in args.variants if v != "compiled"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(machine_line("cuda"))
    print(
        f"device={torch.cuda.get_device_name()} torch={torch.__version__} preset={args.preset} "
        f"reps={args.reps} warmup={args.warmup}"
    )
    print("| model | LR size     | variant       | ms / frame | peak MiB | note |")
    print("|-------|-------------|---------------|------------|----------|------|")
    for name in args.models:
        for size in args.sizes:
            h, w = map(int, size.split("x"))
            run_model(name, args.preset, h, w, args.variants, args.reps, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
