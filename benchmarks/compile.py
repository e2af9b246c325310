"""First-call time of ``torch.compile`` for the reference models' tiny presets, and the compiled result
against eager.

    python benchmarks/compile.py                          # all four, Inductor, 8x8 LR clips
    python benchmarks/compile.py --models mafnet --backend eager

Each model is compiled in a fresh Dynamo state (``torch._dynamo.reset()``) with ``fullgraph=True`` and run
once under ``torch.no_grad()``; the table gives the seconds of that first call (tracing plus code
generation), of a second call with new data (no recompilation expected), the number of captured
graphs, and the largest absolute difference to eager. Compile times depend heavily on the machine and
its load: measure on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch._dynamo.testing
from machine import machine_line

from reference_models import create_model, list_models


def _measure(name: str, backend: str, size: int) -> tuple[float, float, int, float]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    clips = [torch.rand(1, model.num_frames, 3, size, size) for _ in range(2)]
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with torch.no_grad():
        expected = model(clips[0])  # eager first: einops caches its backend outside the graph (else a recompile)
        start = time.perf_counter()
        out = compiled(clips[0])
        first = time.perf_counter() - start
        start = time.perf_counter()
        compiled(clips[1])
        second = time.perf_counter() - start
        diff = (out - expected).abs().max().item()
    return first, second, counter.frame_count, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default: inductor)")
    parser.add_argument("--size", type=int, default=8, help="LR frame height and width (default: 8)")
    args = parser.parse_args()
    print(machine_line())
    print(
        f"torch {torch.__version__}, backend={args.backend}, {torch.get_num_threads()} threads, {args.size}x{args.size} LR"
    )
    print(f"{'model':8} {'first call s':>12} {'second s':>9} {'graphs':>6} {'max |diff|':>11}")
    for name in args.models:
        first, second, graphs, diff = _measure(name, args.backend, args.size)
        print(f"{name:8} {first:12.1f} {second:9.2f} {graphs:6d} {diff:11.2e}", flush=True)


if __name__ == "__main__":
    main()
