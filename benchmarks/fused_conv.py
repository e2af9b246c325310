"""oneDNN's fused convolution + post-op against the convolution and a separate operation, per dtype and memory
format, at the shapes of the residual stacks (issue 22): one table. A script, not a test.

    python benchmarks/fused_conv.py                                   # 64->64 3x3, 64x64, batches 1..5
    python benchmarks/fused_conv.py --batches 5 --dtypes bfloat16 --reps 20

Each row is one dtype, memory format (input and weight alike) and batch; the columns are milliseconds per call of
``relu(conv(x))``, ``leaky_relu(conv(x), 0.1)`` and ``x + conv(x)``: plain (``torch.nn.functional``, as
:func:`vsrblocks.fused_conv.unfused` runs them), the fused kernel alone
(``torch.ops.mkldnn._convolution_pointwise``, called directly) and the fused kernel behind the NaN guard of
:mod:`vsrblocks.fused_conv` (what fusing costs there, in any dtype: the module fuses float32 only), with the
speed-up plain/guarded; the last column is the guard alone (``_surely_no_nan``: one reduction over each of ``x``,
the weights and the bias, one read-back). Times are the best of ``--reps`` calls, the forms taken in turns after a warm-up so that the
load of a shared machine hits all alike. The backend PyTorch
picks for the plain convolution is named: the fused kernel is used only where it is ``Mkldnn`` (a dtype without
oneDNN kernels on this CPU, such as float16 without AVX-512 FP16 / AVX-NE-CONVERT, shows "no kernel").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from machine import machine_line
from torch import nn

from vsrblocks.fused_conv import _surely_no_nan

FORMATS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
PADDING, STRIDE, DILATION, GROUPS = [1, 1], [1, 1], [1, 1], 1


def forms(conv: nn.Conv2d, x: torch.Tensor) -> dict[str, tuple[Callable[[], object], ...]]:
    """Per post-op: (plain, fused kernel, guarded fused kernel) callables."""
    args = (PADDING, STRIDE, DILATION, GROUPS)
    pointwise = torch.ops.mkldnn._convolution_pointwise
    weight, bias = conv.weight, conv.bias
    kernels: dict[str, Callable[[], object]] = {
        "relu": lambda: pointwise(x, weight, bias, *args, "relu", [], ""),
        "leaky": lambda: pointwise(x, weight, bias, *args, "leaky_relu", [0.1], ""),
        "add": lambda: pointwise.binary(x, x, weight, bias, *args, "add", None, None, [], None),
    }
    plain: dict[str, Callable[[], object]] = {
        "relu": lambda: F.relu(conv(x)),
        "leaky": lambda: F.leaky_relu(conv(x), 0.1),
        "add": lambda: x + conv(x),
    }
    return {
        name: (plain[name], kernel, lambda kernel=kernel: _surely_no_nan(conv, x) and kernel())
        for name, kernel in kernels.items()
    }


def best_of_interleaved(runs: tuple[Callable[[], object], ...], reps: int) -> list[float]:
    """Milliseconds per call of each of ``runs``, best of ``reps`` taken in turns."""
    times: list[list[float]] = [[] for _ in runs]
    with torch.no_grad():
        for run in runs:
            run()
        for _ in range(reps):
            for run, kept in zip(runs, times):
                start = time.perf_counter()
                run()
                kept.append(time.perf_counter() - start)
    return [min(kept) * 1e3 for kept in times]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", default="64x64", help="HxW")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    c = args.channels
    print(machine_line())
    print(
        f"# {c}->{c} 3x3 conv, {height}x{width}, ms per call, best of {args.reps} interleaved: plain / fused kernel / "
        "guarded kernel (speed-up plain/guarded)"
    )
    print("| dtype | format | batch | backend | relu | leaky | add | guard ms |")
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for format_name in args.formats:
            memory_format = FORMATS[format_name]
            conv = nn.Conv2d(c, c, 3, padding=1).requires_grad_(False)
            conv = conv.to(dtype, memory_format=memory_format)
            for batch in args.batches:
                x = torch.randn(batch, c, height, width, generator=g).to(dtype).contiguous(memory_format=memory_format)
                backend = torch._C._select_conv_backend(
                    x, conv.weight, conv.bias, STRIDE, PADDING, DILATION, False, [0, 0], GROUPS, None
                )
                cells = []
                for runs in forms(conv, x).values():
                    if backend != torch._C._ConvBackend.Mkldnn:
                        cells.append("no kernel")
                        continue
                    plain, kernel, guarded = best_of_interleaved(runs, args.reps)
                    cells.append(f"{plain:.2f} / {kernel:.2f} / {guarded:.2f} ({plain / guarded:.2f}x)")
                (guard,) = best_of_interleaved((lambda: _surely_no_nan(conv, x),), args.reps)
                print(
                    f"| {dtype_name} | {format_name} | {batch} | {str(backend).split('.')[-1]} | {' | '.join(cells)} "
                    f"| {guard:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
