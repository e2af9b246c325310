"""Whole-video BasicVSR++ in bounded memory: peak RSS and time of ``run basicvsrpp`` by number of frames.

For each frame count, three ways to super-resolve the same LR frames (a smooth texture drifting by about a
pixel per frame, ``--size`` LR pixels) with the paper's width (64 channels, 7 blocks; random weights, seed 0,
identical in every row), each in a fresh process that writes PNG frames:

- ``stream``: ``python -m reference_models run basicvsrpp`` as it is by default: the whole input as one
  exact sequence, features beyond ``--max-memory`` spilled to disk;
- ``forward``: the plain whole-clip forward, ``model(clip)`` on all frames at once (every feature in memory);
- ``segments``: ``run --max-seq-len 30`` (overlap 30 // 4 = 7): the approximate mode.

All three run in ``--precision`` (default float32, given to ``run`` explicitly: its own default ``auto`` picks
bfloat16 on CPUs with AVX-512 BF16 or AMX).

Peak RSS is the process's ``VmHWM`` (``/proc/self/status``: Python, torch and the model included; "after
imports" is its ``VmRSS`` once torch and the package are imported, before the model is built); time is the
wall time of the run inside the process (imports excluded) and the CPU time (user + system, all threads),
which a loaded machine disturbs less. PSNR (on the written 8-bit frames) is against
``stream``'s: ``forward`` must be identical (inf), ``segments`` shows what the cuts cost.

    python benchmarks/streaming.py                     # 60, 240 and 960 frames of 64x64
    python benchmarks/streaming.py --frames 60 --max-memory 64M
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time, warnings
import torch
import reference_models.cli.run, reference_models.networks.basicvsrpp, reference_models.io.video
warnings.simplefilter("ignore")
mode, frames_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
extra = sys.argv[4:]


def status(field):
    with open("/proc/self/status") as status_file:
        return next(int(line.split()[1]) / 1024 for line in status_file if line.startswith(field + ":"))


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


before = status("VmRSS")
torch.manual_seed(0)
start, cpu_start = time.perf_counter(), cpu_seconds()
if mode == "forward":
    import numpy as np
    from PIL import Image
    from reference_models.registry import create_model
    from reference_models.io.video import open_frames
    from reference_models.cli.run import _to_image
    source = open_frames(frames_dir)
    model = create_model("basicvsrpp", "paper").eval()
    clip = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in source]).float().div(255)[None]
    precision = extra[extra.index("--precision") + 1]
    from reference_models.inference.precision import low_precision_weights, mixed_dtype, mixed_precision
    dtype = mixed_dtype(model, precision)
    with torch.no_grad(), low_precision_weights(model, dtype), mixed_precision(model, dtype):
        out = model(clip)[0].float()
    Path = __import__("pathlib").Path
    Path(out_dir).mkdir()
    for name, frame in zip(source.names, out):
        Image.fromarray(_to_image(frame, name)).save(Path(out_dir) / name, compress_level=1)
else:
    from reference_models.cli.run import main
    code = main(["basicvsrpp", "--random-weights", "--device", "cpu", "--quiet", "--input", frames_dir,
                   "--output", out_dir, *extra])
    if code:
        sys.exit(code)
seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mib": status("VmHWM"), "before_mib": before}))
"""


def cpu_description() -> str:
    """The CPU model (lscpu), torch's CPU capability, whether AMX is there, and torch's threads."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            amx = "amx_tile" in cpuinfo.read()
    except OSError:
        amx = False
    return (
        f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, AMX {'yes' if amx else 'no'}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} logical CPUs"
    )


def make_frames(folder: Path, count: int, size: int) -> None:
    """``count`` PNG frames of a smooth random texture that drifts by about a pixel per frame."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    big = 4 * size
    noise = rng.random((big + count + 8, big + count + 8, 3))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, noise)
    folder.mkdir()
    for i in range(count):
        y, x = i, i // 2
        crop = noise[y : y + big, x : x + big]
        image = Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        image.save(folder / f"{i:05d}.png")


def measure(mode: str, frames: Path, out: Path, extra: list[str], threads: int) -> dict:
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **threads_env}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(frames), str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{mode}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def psnr_folders(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    errors = []
    for path in sorted(a.iterdir()):
        x = np.asarray(Image.open(path), dtype=np.float64)
        y = np.asarray(Image.open(b / path.name), dtype=np.float64)
        errors.append(((x - y) ** 2).mean())
    mse = float(np.mean(errors))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 240, 960])
    parser.add_argument("--size", type=int, default=64, help="LR frame side (default 64)")
    parser.add_argument("--max-memory", default="64M", help="budget of the streamed run's feature store (default 64M)")
    parser.add_argument("--modes", nargs="+", default=["stream", "forward", "segments"])
    parser.add_argument("--max-seq-len", type=int, default=30)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16", "auto"],
        help="of every run (run --precision; the forward under the same mixed precision); default float32",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads of every run (OMP_NUM_THREADS; default: the logical CPUs). On a loaded machine use 1: "
        "spinning OpenMP threads then cost several times the work",
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"CPU: {cpu_description()}")
    print(
        f"basicvsrpp paper (64 ch x 7 blocks, random weights), {args.size}x{args.size} LR -> x4, {args.precision}; "
        "stream budget "
        f"--max-memory {args.max_memory}; segments --max-seq-len {args.max_seq_len} (overlap {args.max_seq_len // 4})"
    )
    print()
    print(
        f"| {'frames':>6} | {'mode':<8} | {'wall s':>7} | {'CPU s':>7} | {'CPU s/frame':>11} | {'peak RSS MiB':>12} | "
        f"{'after imports MiB':>17} | {'PSNR vs stream dB':>17} |"
    )
    print(f"|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 13}|{'-' * 14}|{'-' * 19}|{'-' * 19}|")
    extras = {
        "stream": ["--max-memory", args.max_memory],
        "forward": [],
        "segments": ["--max-seq-len", str(args.max_seq_len)],
    }
    precision = ["--precision", args.precision]
    for count in args.frames:
        with tempfile.TemporaryDirectory(prefix="bench-streaming-") as work:
            work = Path(work)
            make_frames(work / "in", count, args.size)
            for mode in args.modes:
                row = measure(mode, work / "in", work / mode, [*extras[mode], *precision], args.threads)
                quality = ""
                if mode != "stream" and (work / "stream").exists():
                    quality = f"{psnr_folders(work / 'stream', work / mode):.2f}"
                print(
                    f"| {count:>6} | {mode:<8} | {row['seconds']:>7.1f} | {row['cpu']:>7.1f} | {row['cpu'] / count:>11.2f} | "
                    f"{row['peak_mib']:>12.0f} | {row['before_mib']:>17.0f} | {quality:>17} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
