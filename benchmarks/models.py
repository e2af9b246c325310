"""Speed and peak memory of the reference models' presets, one table.

    python benchmarks/models.py                       # paper presets, 64x64 and 180x320 LR, CPU
    python benchmarks/models.py --presets tiny --sizes 64x64 --device cuda

Each (model, preset, size) runs in its own subprocess so that peak memory is that run's alone, measured over
the forward passes after the model and input exist (``benchmarks/peak_memory.py``: peak RSS on CPU, on CUDA
``torch.cuda.max_memory_allocated``). Time is the median of ``--reps`` forward passes after one warm-up,
divided by the number of output frames (1 for centre-frame models, T for clip models).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import reference_models
from peak_memory import SUBPROCESS_ENV, PeakMemory  # sibling script module


def measure(name: str, preset: str, height: int, width: int, device: str, reps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = reference_models.create_model(name, preset).eval().to(device)
    clip = torch.rand(batch, model.num_frames, 3, height, width, device=device)
    outputs_per_pass = batch * (model.num_frames if model.output_mode == "all" else 1)
    params = sum(p.numel() for p in model.parameters())
    memory = PeakMemory(device)
    memory.start()
    times = []
    with torch.inference_mode():
        for i in range(reps + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(clip)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    return {
        "params_m": params / 1e6,
        "ms_per_frame": 1000 * statistics.median(times) / outputs_per_pass,
        "peak_mib": memory.peak_mib(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=reference_models.list_models())
    parser.add_argument("--presets", nargs="*", default=["paper"])
    parser.add_argument("--sizes", nargs="*", default=["64x64", "180x320"], help="LR sizes HxW")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is reported as skipped")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.single:
        name, preset, size = args.single.split(":")
        h, w = map(int, size.split("x"))
        print(json.dumps(measure(name, preset, h, w, args.device, args.reps, args.batch)))
        return

    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} reps={args.reps}")
    header = f"| {'model':7s} | {'preset':11s} | {'LR size':8s} | {'params (M)':>10s} | {'ms / output frame':>17s} | {'peak mem (MiB)':>14s} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name in args.models:
        for preset in args.presets:
            if preset not in reference_models.list_presets(name):
                continue
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--single", f"{name}:{preset}:{size}", "--device", args.device,
                       "--reps", str(args.reps), "--batch", str(args.batch)]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=SUBPROCESS_ENV)
                    row = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
                    why = done.stderr.strip().splitlines()[-1] if done.returncode else ""
                except subprocess.TimeoutExpired:
                    row, why = None, f"over {args.timeout:.0f} s"
                if row is None:
                    print(f"| {name:7s} | {preset:11s} | {size:8s} | {'':>10s} | {'skipped: ' + why[:60]:>17s} | {'':>14s} |")
                else:
                    print(f"| {name:7s} | {preset:11s} | {size:8s} | {row['params_m']:10.3f} | "
                          f"{row['ms_per_frame']:17.1f} | {row['peak_mib']:14.0f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
