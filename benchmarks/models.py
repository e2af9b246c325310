"""Speed and peak memory of the reference models' presets against the official dense form, one table.

    python benchmarks/models.py                                   # MANA 7x64x112 and VSRT 5x64x64 (paper), 3 rounds
    python benchmarks/models.py --train                           # a training step instead of a forward pass
    python benchmarks/models.py --before 7f06a8d                  # also the code of an earlier revision
    python benchmarks/models.py --models vsrt --pairs 6           # and the ratio of back-to-back pairs in one process
    python benchmarks/models.py --models mana --sizes 180x320 --forms ours   # peak memory at REDS size
    python benchmarks/models.py --models dasaa mafnet --presets tiny --sizes 64x64 --device cuda

Forms (``--forms``), each the same weights (seed 0) and the same input:

- ``ours``   -- the model as it is in this checkout;
- ``dense``  -- the official dense form, the in-run reference: every MANA cross-frame attention replaced by the
  official read-out (a stored ``(HW x HW)`` distance matrix and one full ``(HW x HW)`` softmax matrix per frame,
  ``benchmarks/attention.py``), VSRT's STCSA and flows computed as the official code does (``Unfold``/``Fold``
  patches, an explicit softmax matrix, SPyNet on ``T + 1`` pairs per direction: ``benchmarks/official_vsrt.py``),
  and every other ``scaled_dot_product_attention`` forced onto PyTorch's unfused math backend (matrix product,
  softmax, matrix product, as the official codes write it); convolutions, activations and residual additions as
  separate operations (``vsrblocks.fused_conv.unfused``), VSRT's features contiguous (NCHW). Skipped when one ``(HW)^2`` float32 matrix exceeds
  ``--max-dense-gb``;
- ``before`` -- the model as it was at revision ``--before`` (``git archive`` into a temporary folder).

Rounds interleave the forms (ours, dense, before, ours, dense, ...) so that the load of a shared machine hits all of
them alike; every time is the median over ``--rounds`` rounds of the median of ``--reps`` passes after one
warm-up, each run in its own subprocess. Peak memory comes from one more run per form, alone in its subprocess
and with a small glibc mmap threshold (``benchmarks/peak_memory.py``), which would slow the timed passes.
``--pairs N`` adds, per model, the ratio ours / dense from ``N`` back-to-back pairs of passes in one process (the
two models side by side, same weights): on a machine whose speed drifts this ratio is steadier than the one between
the rounds' medians. Per row: seconds per output frame, the ratio to the dense form, peak memory, the achieved rate in GFLOP/s
(every multiply-add of the forward pass counted by ``reference_models.inference.flops.count_macs`` in this checkout; a
training step counts 3x the forward) and that rate as a fraction of this machine's fp32 matrix-product rate
measured in the same subprocess just before (``torch.mm`` of 2048x2048 matrices, best of 3).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention import dense_readout, distance_matrix  # noqa: E402 (sibling script module)
from machine import machine_line  # noqa: E402 (sibling script module)
from official_vsrt import make_official  # noqa: E402 (sibling script module)
from peak_memory import SUBPROCESS_ENV, PeakMemory  # noqa: E402 (sibling script module)

import reference_models  # noqa: E402
from reference_models.inference.flops import count_macs  # noqa: E402

#: The paper configuration of each model: frames come from the preset, the LR size from the paper's training.
PAPER_SIZES = {"mana": "64x112", "vsrt": "64x64"}
FORMS = ("ours", "dense", "before")


def gemm_gflops(device: str, size: int = 2048) -> float:
    """This machine's fp32 matrix-product rate: best of 3 ``torch.mm`` of two ``size x size`` matrices."""
    a, b = torch.rand(size, size, device=device), torch.rand(size, size, device=device)
    best = float("inf")
    for _ in range(4):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def make_dense(model: torch.nn.Module, height: int, width: int) -> Callable[[], contextlib.AbstractContextManager]:
    """Switch ``model`` to the official dense form (in place) and return what makes the context to run it in."""
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

    from reference_models.networks.vsrt import VSRT  # noqa: PLC0415
    from vsrblocks.attention.gaussian_cross_frame import GaussianCrossFrameAttention  # noqa: PLC0415

    official = make_official(model) if isinstance(model, VSRT) else contextlib.nullcontext
    dist = distance_matrix(height, width).to(next(model.parameters()).device)
    for module in model.modules():
        if isinstance(module, GaussianCrossFrameAttention):
            module.attend = lambda normed, query, block=module: dense_readout(block, normed, query, dist)
    return lambda: _official_context(official(), sdpa_kernel(SDPBackend.MATH))


@contextlib.contextmanager
def _official_context(*contexts: contextlib.AbstractContextManager) -> Iterator[None]:
    # the official codes run every convolution, activation and residual addition as separate operations
    from vsrblocks.fused_conv import unfused  # noqa: PLC0415 (a 'before' revision may predate it)

    with contextlib.ExitStack() as stack:
        for context in (*contexts, unfused()):
            stack.enter_context(context)
        yield


def measure(name: str, preset: str, form: str, height: int, width: int, device: str, reps: int, train: bool) -> dict:
    torch.manual_seed(0)
    model = reference_models.create_model(name, preset).to(device)
    model.train(train)
    clip = torch.rand(1, model.num_frames, 3, height, width, device=device)
    context = make_dense(model, height, width) if form == "dense" else contextlib.nullcontext
    outputs = model.num_frames if model.output_mode == "all" else 1
    step = _timed_step(model, context, train)
    gemm = gemm_gflops(device)
    memory = PeakMemory(device)
    memory.start()
    times = [step(clip) for _ in range(reps + 1)][1:]  # after one warm-up pass
    return {"s_per_frame": statistics.median(times) / outputs, "peak_mib": memory.peak_mib(), "gemm_gflops": gemm}


def measure_pairs(name: str, preset: str, height: int, width: int, device: str, pairs: int, train: bool) -> dict:
    """``ours`` and ``dense`` (same weights, same input) timed alternately in one process, ``pairs`` times after
    a warm-up of each, in alternating order: the ratio of each back-to-back pair cancels most of a shared
    machine's drift."""
    steps, outputs = {}, 1
    for form in ("ours", "dense"):
        torch.manual_seed(0)
        model = reference_models.create_model(name, preset).to(device).train(train)
        outputs = model.num_frames if model.output_mode == "all" else 1
        context = make_dense(model, height, width) if form == "dense" else contextlib.nullcontext
        steps[form] = _timed_step(model, context, train)
    torch.manual_seed(1)
    clip = torch.rand(1, model.num_frames, 3, height, width, device=device)
    for step in steps.values():
        step(clip)
    times = {form: [] for form in steps}
    for index in range(pairs):
        # the order alternates, so that neither form always runs right after the other freed its memory
        for form in list(steps)[:: 1 if index % 2 == 0 else -1]:
            times[form].append(steps[form](clip) / outputs)
    ratios = sorted(a / b for a, b in zip(times["ours"], times["dense"]))
    return {"ratios": ratios, "ours": statistics.median(times["ours"]), "dense": statistics.median(times["dense"])}


def _timed_step(model: torch.nn.Module, context: Callable[[], contextlib.AbstractContextManager], train: bool):
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4) if train else None

    def step(clip: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with context(), torch.inference_mode(not train):
            out = model(clip)
            if train:
                loss = (out - 0.5).abs().mean()
                extra = getattr(model, "last_memory_loss", None)
                (loss if extra is None else loss + extra).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def forward_gflop(name: str, preset: str, height: int, width: int) -> tuple[float, int]:
    """GFLOP (2 x multiply-adds) of one forward pass per output frame, counted on the meta device, and the
    number of input frames."""
    with torch.device("meta"):
        model = reference_models.create_model(name, preset).eval()
        clip = torch.empty(1, model.num_frames, 3, height, width)
    outputs = model.num_frames if model.output_mode == "all" else 1
    return 2 * count_macs(model, clip)["total"] / 1e9 / outputs, model.num_frames


def _before_tree(revision: str, into: str) -> str:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(into, filter="data")
    return into


def _paired_line(name: str, preset: str, clip: str, size: str, args: argparse.Namespace) -> str:
    cmd = [
        sys.executable,
        __file__,
        "--single",
        f"{name}:{preset}:pairs:{size}",
        "--device",
        args.device,
        "--pairs",
        str(args.pairs),
        "--threads",
        str(args.threads),
    ] + (["--train"] if args.train else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "benchmarks")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if done.returncode:
        return f"{name} {preset} {clip}: paired run failed: {done.stderr.strip().splitlines()[-1:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ratios = result["ratios"]
    return (
        f"{name} {preset} {clip}: ours / dense over {len(ratios)} back-to-back pairs in one process: median "
        f"{statistics.median(ratios):.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f}; ours {result['ours']:.3f} s, "
        f"dense {result['dense']:.3f} s per output frame)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(PAPER_SIZES))
    parser.add_argument("--presets", nargs="*", default=["paper"])
    parser.add_argument("--sizes", nargs="*", help="LR sizes HxW (default: each model's paper size)")
    parser.add_argument("--forms", nargs="*", default=["ours", "dense"], choices=FORMS)
    parser.add_argument("--before", metavar="REV", help="git revision for the 'before' form (adds it to --forms)")
    parser.add_argument("--train", action="store_true", help="time a training step (forward, L1 loss, backward, Adam)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run (CPU)")
    parser.add_argument("--reps", type=int, default=1, help="timed passes per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of every form")
    parser.add_argument("--max-dense-gb", type=float, default=1.0, help="skip the dense form above this (HW)^2 matrix")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per run before it is reported as skipped"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="also time ours and dense alternately in one process this many times (ratio per pair)",
    )
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.single:
        name, preset, form, size = args.single.split(":")
        h, w = map(int, size.split("x"))
        if form == "pairs":
            print(json.dumps(measure_pairs(name, preset, h, w, args.device, args.pairs, args.train)))
        else:
            print(json.dumps(measure(name, preset, form, h, w, args.device, args.reps, args.train)))
        return

    forms = list(dict.fromkeys(args.forms + (["before"] if args.before else [])))
    if "before" in forms and not args.before:
        parser.error("--forms before needs --before REV")
    scratch = tempfile.TemporaryDirectory(prefix="vsrblocks-before-")
    trees = {"ours": str(REPO), "dense": str(REPO)}
    if args.before:
        trees["before"] = _before_tree(args.before, scratch.name)
    pass_name = "training step" if args.train else "forward"
    print(machine_line(args.device))
    print(
        f"device={args.device} threads={args.threads} batch=1 pass={pass_name} reps={args.reps} rounds={args.rounds} "
        f"before={args.before or '-'} torch={torch.__version__}"
    )
    pairs: list[str] = []
    header = (
        f"| {'model':5s} | {'preset':6s} | {'clip':10s} | {'form':6s} | {'s / out frame':>13s} | {'x dense':>7s} | "
        f"{'peak MiB':>8s} | {'GFLOP/s':>7s} | {'of GEMM':>7s} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name in args.models:
        for preset in args.presets:
            if preset not in reference_models.list_presets(name):
                continue
            for size in args.sizes or [PAPER_SIZES.get(name, "64x64")]:
                h, w = map(int, size.split("x"))
                gflop, frames = forward_gflop(name, preset, h, w)
                gflop *= 3 if args.train else 1
                clip = f"{frames}x{size}"
                runs: dict[str, list[dict]] = {form: [] for form in forms}
                peaks: dict[str, float] = {}
                notes: dict[str, str] = {}
                if "dense" in forms and (h * w) ** 2 * 4 / 1e9 > args.max_dense_gb:
                    notes["dense"] = f"skipped: (HW)^2 matrix {(h * w) ** 2 * 4 / 1e9:.1f} GB"
                # Timed rounds run with the default allocator; one more run per form measures the peak memory with
                # SUBPROCESS_ENV, whose small mmap threshold makes RSS follow the live tensors but also makes every
                # large allocation fault its pages in afresh (seconds per pass for VSRT: not for timing).
                for round_index in range(args.rounds + 1):
                    memory_round = round_index == args.rounds
                    for form in forms:
                        if form in notes:
                            continue
                        cmd = [
                            sys.executable,
                            __file__,
                            "--single",
                            f"{name}:{preset}:{form}:{size}",
                            "--device",
                            args.device,
                            "--reps",
                            str(1 if memory_round else args.reps),
                            "--threads",
                            str(args.threads),
                        ]
                        cmd += ["--train"] if args.train else []
                        env = {
                            **(SUBPROCESS_ENV if memory_round else os.environ),
                            "PYTHONPATH": os.pathsep.join([trees[form], str(REPO / "benchmarks")]),
                        }
                        try:
                            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
                        except subprocess.TimeoutExpired:
                            notes[form] = f"skipped: over {args.timeout:.0f} s"
                            continue
                        if done.returncode:
                            lines = done.stderr.strip().splitlines()
                            notes[form] = "failed: " + (lines[-1][:60] if lines else f"exit {done.returncode}")
                            continue
                        result = json.loads(done.stdout.strip().splitlines()[-1])
                        if memory_round:
                            peaks[form] = result["peak_mib"]
                        else:
                            runs[form].append(result)
                dense_s = statistics.median(r["s_per_frame"] for r in runs["dense"]) if runs.get("dense") else None
                for form in forms:
                    if not runs[form]:
                        print(f"| {name:5s} | {preset:6s} | {clip:10s} | {form:6s} | {notes.get(form, '-')} |")
                        continue
                    sec = statistics.median(r["s_per_frame"] for r in runs[form])
                    peak = peaks.get(form, float("nan"))
                    gemm = statistics.median(r["gemm_gflops"] for r in runs[form])
                    ratio = f"{sec / dense_s:7.2f}" if dense_s else f"{'-':>7s}"
                    print(
                        f"| {name:5s} | {preset:6s} | {clip:10s} | {form:6s} | {sec:13.3f} | {ratio} | {peak:8.0f} | "
                        f"{gflop / sec:7.1f} | {gflop / sec / gemm:7.0%} |"
                    )
                if args.pairs and "dense" not in notes:
                    pairs.append(_paired_line(name, preset, clip, size, args))
                sys.stdout.flush()
    for line in pairs:
        print(line)
    scratch.cleanup()


if __name__ == "__main__":
    main()
