"""Speed of the alignment blocks: SPyNet per frame pair, and DeformConv2d's torchvision vs pure-torch backends.

    python benchmarks/align.py                                  # CPU, 64x64 and 180x320, 4 pairs per call
    python benchmarks/align.py --device cuda --pairs 8 --reps 20
    python benchmarks/align.py --sizes 64x64 --reps 2           # quick

SPyNet runs ``--pairs`` frame pairs in one batched call (as :func:`vsrblocks.align.bidirectional_flows`
does for a clip) and reports milliseconds per pair. DeformConv2d runs one ``(1, C, H, W)`` feature map
(C = ``--channels``, 3x3, 8 deformable groups, offsets predicted from the input and made non-zero), in
inference mode and as a training step (forward, then backward to every parameter).
Times are medians of ``--reps`` timed runs after one warm-up, float32 (TF32 off).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from machine import machine_line

from vsrblocks.align import DeformConv2d, SPyNet
from vsrblocks.align.deform_conv import torchvision_available


def _time_ms(fn: Callable[[], torch.Tensor], reps: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in size.split("x")) for size in text.split(",")]  # type: ignore[misc]


def bench_spynet(sizes: list[tuple[int, int]], pairs: int, reps: int, device: str) -> list[tuple[str, str, str]]:
    spynet = SPyNet().eval().to(device)
    rows = []
    for height, width in sizes:
        ref = torch.rand(pairs, 3, height, width, device=device)
        supp = torch.rand(pairs, 3, height, width, device=device)
        with torch.inference_mode():
            ms = _time_ms(lambda: spynet(ref, supp), reps, device)
        rows.append((f"SPyNet, {pairs} pairs per call", f"{height}x{width}", f"{ms / pairs:.2f} ms / pair"))
    return rows


def bench_deform_conv(
    sizes: list[tuple[int, int]], channels: int, reps: int, device: str
) -> list[tuple[str, str, str]]:
    backends = ["torchvision", "torch"] if torchvision_available() else ["torch"]
    rows = []
    for height, width in sizes:
        x = torch.randn(1, channels, height, width, device=device)
        for backend in backends:
            torch.manual_seed(0)
            dcn = DeformConv2d(channels, channels, deform_groups=8, backend=backend).to(device)
            with torch.no_grad():
                dcn.conv_offset.weight.normal_(0.0, 0.01)  # non-zero offsets, a few pixels
            with torch.inference_mode():
                forward_ms = _time_ms(lambda: dcn(x), reps, device)

            def train_step() -> torch.Tensor:
                dcn.zero_grad(set_to_none=True)
                out = dcn(x)
                out.square().mean().backward()
                return out

            train_ms = _time_ms(train_step, reps, device)
            rows.append(
                (
                    f"DeformConv2d {channels}->{channels} 3x3, backend={backend}",
                    f"{height}x{width}",
                    f"{forward_ms:.2f} ms forward, {train_ms:.2f} ms forward + backward",
                )
            )
        if "torchvision" not in backends:
            rows.append(
                (f"DeformConv2d {channels}->{channels} 3x3, backend=torchvision", f"{height}x{width}", "not available")
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="64x64,180x320", help="comma-separated HxW LR sizes")
    parser.add_argument("--pairs", type=int, default=4, help="SPyNet frame pairs per batched call")
    parser.add_argument("--channels", type=int, default=64, help="DeformConv2d feature channels")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sizes = _sizes(args.sizes)
    rows = bench_spynet(sizes, args.pairs, args.reps, args.device)
    rows += bench_deform_conv(sizes, args.channels, args.reps, args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(machine_line(args.device))
    print(f"# alignment blocks on {name}, torch {torch.__version__}, float32, median of {args.reps}")
    widths = [max(len(row[i]) for row in rows + [("block", "LR size", "time")]) for i in range(3)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(("block", "LR size", "time"), widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
