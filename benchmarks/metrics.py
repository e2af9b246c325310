"""Speed of :func:`vsrblocks.psnr` / :func:`vsrblocks.ssim` on frame pairs, against scikit-image's SSIM.

    python benchmarks/metrics.py                       # 576x720 (Vid4's largest frames), 5 reps
    python benchmarks/metrics.py --sizes 144x180 576x720 --reps 9
    python benchmarks/metrics.py --evaluate          # also: evaluate bicubic on a synthetic Vid4-sized set

Each row scores one ``(1, 3, H, W)`` float32 pair of 8-bit values (a frame and a noisy copy), as an
evaluation does: RGB and the BT.601 Y channel. ``skimage`` is ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)`` in float64, the value BasicSR's SSIM equals; the
last column is the largest difference to it. Times are medians of ``--reps`` runs after one warm-up, with the
threads torch uses by default; on a shared machine take them as ratios.

``--evaluate`` writes a synthetic tree with Vid4's layout and sizes (GT/ and BIx4/ of calendar 41 frames of
576x720, city 34 of 576x704, foliage 49 and walk 47 of 480x720: 171 frames) and times
``python -m reference_models evaluate bicubic --dataset vid4`` on it, in this process (the frames are smooth
random textures; the time does not depend on the content). ``--evaluate-frames N`` makes a smaller set with
the same sizes, for a quick per-frame figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import machine_line  # noqa: E402 (sibling script module)
from PIL import Image
from skimage.metrics import structural_similarity

from vsrblocks import psnr, ssim
from vsrblocks.metrics import rgb_to_y


def _time_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    a, b = (t[0].double().permute(1, 2, 0).numpy() * 255 for t in (x, y))
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    return float(structural_similarity(a, b, channel_axis=2, **options))


_VID4 = {"calendar": (41, 576, 720), "city": (34, 576, 704), "foliage": (49, 480, 720), "walk": (47, 480, 720)}


def _time_evaluate(total: int) -> None:
    from reference_models.cli import main as cli_main
    from reference_models.data import bicubic_downsample

    with tempfile.TemporaryDirectory() as tmp:
        g = torch.Generator().manual_seed(0)
        for clip, (frames, h, w) in _VID4.items():
            frames = max(1, round(frames * total / 171))
            for folder in ("GT", "BIx4"):
                (Path(tmp) / folder / clip).mkdir(parents=True)
            for i in range(frames):
                coarse = torch.rand(1, 3, h // 16, w // 16, generator=g)
                hr = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)
                lr = bicubic_downsample(hr).clamp(0, 1)
                for folder, image in (("GT", hr), ("BIx4", lr)):
                    array = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                    Image.fromarray(np.ascontiguousarray(array)).save(
                        Path(tmp) / folder / clip / f"{i:08d}.png", compress_level=1
                    )
        count = sum(max(1, round(frames * total / 171)) for frames, _, _ in _VID4.values())
        start, cpu = time.perf_counter(), time.process_time()
        cli_main(["evaluate", "bicubic", "--dataset", "vid4", "--root", tmp, "--quiet"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"evaluate bicubic, {count} frames (Vid4 sizes, provided BIx4): {seconds:.1f} s wall, {seconds / count:.2f} s per frame; "
            f"{cpu:.1f} s of CPU time (what the wall time is on an idle machine with one thread)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["576x720"], help="HxW frame sizes")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--evaluate", action="store_true", help="also time evaluate bicubic on a synthetic Vid4-sized set"
    )
    parser.add_argument(
        "--evaluate-frames",
        type=int,
        default=171,
        help="frames of that set, spread over the four clips as in Vid4 (default 171)",
    )
    args = parser.parse_args()
    print(machine_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| size | psnr RGB ms | psnr Y ms | ssim RGB ms | ssim Y ms | skimage ssim RGB ms | max abs diff to skimage |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(1, 3, h, w, generator=g) * 255).round() / 255
        y = ((x + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1) * 255).round() / 255
        times = [
            _time_ms(lambda: psnr(x, y), args.reps),
            _time_ms(lambda: psnr(x, y, test_y_channel=True), args.reps),
            _time_ms(lambda: ssim(x, y), args.reps),
            _time_ms(lambda: ssim(x, y, test_y_channel=True), args.reps),
            _time_ms(lambda: _skimage_ssim(x, y), args.reps),
        ]
        luma = [rgb_to_y(t.double()) for t in (x, y)]
        diff = max(
            abs(ssim(x, y).item() - _skimage_ssim(x, y)),
            abs(ssim(x, y, test_y_channel=True).item() - _skimage_ssim(*luma)),
        )
        print(f"| {h}x{w} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {diff:.1e} |")
    if args.evaluate:
        _time_evaluate(args.evaluate_frames)


if __name__ == "__main__":
    main()
