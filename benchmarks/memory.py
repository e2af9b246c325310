"""Peak memory of DASAA and MAFnet per preset and LR size, run as ``python -m reference_models run`` would.

For each row: the estimate of :func:`reference_models.inference.memory_budget.estimate_memory` (live tensor bytes, probes
at 32 and 48 pixels, extrapolated linearly), the tile ``run`` would choose under the budget, and, for sizes up
to ``--measure-up-to`` LR pixels, the peak resident memory of the (tiled) pass measured in a fresh process
(:mod:`benchmarks.peak_memory`). ``--before`` measures with the explicit ``HW x HW`` maps of PAM instead of the
fused kernel (what every PAM did on the CPU before the fused path was made to apply).

    python benchmarks/memory.py                       # tiny and paper at 120x90, 180x320, 640x480
    python benchmarks/memory.py --max-memory 4G --presets tiny --before
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((90, 120), (180, 320), (480, 640))

_ROW = """
import json, sys, torch
from benchmarks.peak_memory import PeakMemory
from reference_models.inference.upscale import forward_tiled
from reference_models.registry import create_model
from vsrblocks.attention import PositionAttention
name, preset, h, w, tile, before = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
torch.manual_seed(0)
model = create_model(name, preset).eval()
for module in model.modules():
    if isinstance(module, PositionAttention):
        module.fused = not before
clip = torch.rand(1, model.num_frames, 3, h, w)
meter = PeakMemory("cpu")
meter.start()
with torch.no_grad():
    forward_tiled(model, clip, tile, 16) if tile else model(clip)
print(json.dumps(meter.peak_mib()))
"""


def _measure(name: str, preset: str, h: int, w: int, tile: int | None, before: bool) -> float:
    from benchmarks.peak_memory import SUBPROCESS_ENV

    argv = [sys.executable, "-c", _ROW, name, preset, str(h), str(w), str(tile or 0), "1" if before else "0"]
    result = subprocess.run(
        argv, cwd=ROOT, env={**SUBPROCESS_ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["dasaa", "mafnet"])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--max-memory", help="budget as for run (default: half the available memory)")
    parser.add_argument("--measure-up-to", type=int, default=120 * 90, help="measure sizes up to this many pixels")
    parser.add_argument("--before", action="store_true", help="also measure with PAM's explicit maps")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from reference_models.inference.memory_budget import choose_tile, default_budget, estimate_memory, parse_size
    from reference_models.registry import create_model

    torch.set_num_threads(2)
    budget = parse_size(args.max_memory) if args.max_memory else default_budget("cpu")
    print(machine_line())
    print(f"budget {budget / 2**20:.0f} MiB; peak memory in MiB (estimate includes the x1.5 safety factor)")
    print(f"{'model':8} {'preset':6} {'LR size':>8} {'estimate':>9} {'tile':>5} {'measured':>9} {'before':>9}")
    for name in args.models:
        for preset in args.presets:
            torch.manual_seed(0)
            estimate = estimate_memory(create_model(name, preset).eval())
            for h, w in SIZES:
                tile = choose_tile(estimate, h, w, budget)
                whole = estimate.peak(h, w) / 2**20
                measured = before = "-"
                if h * w <= args.measure_up_to:
                    measured = f"{_measure(name, preset, h, w, tile, False):.0f}"
                    if args.before:
                        before = f"{_measure(name, preset, h, w, tile, True):.0f}"
                print(f"{name:8} {preset:6} {f'{w}x{h}':>8} {whole:9.0f} {tile or '-':>5} {measured:>9} {before:>9}")


if __name__ == "__main__":
    main()
