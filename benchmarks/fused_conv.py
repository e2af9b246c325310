"""oneDNN's fused convolution + post-op against the convolution and a separate operation, per dtype and memory
format, at the shapes of the residual stacks (issue 22): one table. A script, not a test.

    python benchmarks/fused_conv.py                                   # 64->64 3x3, 64x64, batches 1..5
    python benchmarks/fused_conv.py --batches 5 --dtypes bfloat16 --reps 20

Each row is one dtype, memory format (input and weight alike) and batch; the columns are milliseconds per call of
``relu(conv(x))``, ``leaky_relu(conv(x), 0.1)`` and ``x + conv(x)``, plain (``torch.nn.functional``, as
:func:`vsrblocks.fused_conv.unfused` runs them) and fused (``torch.ops.mkldnn._convolution_pointwise``, called
directly: no NaN guard), and the speed-up plain/fused. Times are the best of ``--reps`` calls, the plain and the
fused form taken in turns after a warm-up so that the load of a shared machine hits both. The backend PyTorch
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

FORMATS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
PADDING, STRIDE, DILATION, GROUPS = [1, 1], [1, 1], [1, 1], 1


def forms(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]]:
    """Per post-op: (plain, fused) callables."""
    args = (PADDING, STRIDE, DILATION, GROUPS)
    pointwise = torch.ops.mkldnn._convolution_pointwise

    def conv() -> torch.Tensor:
        return F.conv2d(x, weight, bias, padding=1)

    return {
        "relu": (lambda: F.relu(conv()), lambda: pointwise(x, weight, bias, *args, "relu", [], "")),
        "leaky": (
            lambda: F.leaky_relu(conv(), 0.1),
            lambda: pointwise(x, weight, bias, *args, "leaky_relu", [0.1], ""),
        ),
        "add": (
            lambda: x + conv(),
            lambda: pointwise.binary(x, x, weight, bias, *args, "add", None, None, [], None),
        ),
    }


def best_of_interleaved(plain: Callable[[], torch.Tensor], fused: Callable[[], torch.Tensor], reps: int) -> tuple:
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        plain(), fused()
        for _ in range(reps):
            for run, kept in zip((plain, fused), times):
                start = time.perf_counter()
                run()
                kept.append(time.perf_counter() - start)
    return min(times[0]) * 1e3, min(times[1]) * 1e3


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
    print(f"# {c}->{c} 3x3 conv, {height}x{width}, ms per call, best of {args.reps} interleaved (plain / fused)")
    print("| dtype | format | batch | backend | relu plain / fused | leaky plain / fused | add plain / fused |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for format_name in args.formats:
            memory_format = FORMATS[format_name]
            weight = (0.05 * torch.randn(c, c, 3, 3, generator=g)).to(dtype).contiguous(memory_format=memory_format)
            bias = (0.1 * torch.randn(c, generator=g)).to(dtype)
            for batch in args.batches:
                x = torch.randn(batch, c, height, width, generator=g).to(dtype).contiguous(memory_format=memory_format)
                backend = torch._C._select_conv_backend(
                    x, weight, bias, STRIDE, PADDING, DILATION, False, [0, 0], GROUPS, None
                )
                cells = []
                for plain, fused in forms(x, weight, bias).values():
                    if backend != torch._C._ConvBackend.Mkldnn:
                        cells.append("no kernel")
                        continue
                    t_plain, t_fused = best_of_interleaved(plain, fused, args.reps)
                    cells.append(f"{t_plain:.2f} / {t_fused:.2f} ({t_plain / t_fused:.2f}x)")
                print(
                    f"| {dtype_name} | {format_name} | {batch} | {str(backend).split('.')[-1]} | {' | '.join(cells)} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
