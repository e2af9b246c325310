"""Speed and peak memory of MANA's Gaussian cross-frame attention (ours vs the official dense formulation) and of
VSR-Transformer's STCSA, one table. A script, not a test.

    python benchmarks/attention.py                                  # default: CPU, 1 timed pass per row
    python benchmarks/attention.py --device cuda --reps 5
    python benchmarks/attention.py --rows ours:64x112 dense:64x112  # a subset

Rows (``--rows``, ``kind:HxW``):

- ``ours``   -- :class:`vsrblocks.attention.GaussianCrossFrameAttention` (C=128, T=7, Ci=64), exact, automatic
  query chunks (Gaussian from coordinates, no ``(HW)^2`` tensor beyond one chunk);
- ``window`` -- the same with ``window_sigmas=4`` (exact softmax denominator, Gaussian truncated at 4 sigma);
- ``dense``  -- the official formulation with the same weights: a stored ``(HW x HW)`` squared-distance matrix,
  the full ``(HW x HW)`` Gaussian, and one full ``(HW x HW)`` softmax matrix per frame. Skipped (with the size it
  would need) when its ``(HW)^2`` matrices exceed ``--max-dense-gb``;
- ``stcsa``  -- :class:`vsrblocks.attention.STCSA` (C=64, patch 8, 1 head, T=7, joint space-time attention over all
  patches) if importable, else "not available".

Each row runs in its own subprocess so that its peak memory is its own, measured over the timed passes only
(``benchmarks/peak_memory.py``): the inputs, the weights and the dense baseline's stored ``D`` are not counted. Time is the median of ``--reps`` forward passes
(``torch.inference_mode``) after ``--warmup`` untimed ones; ``--train`` times forward + backward instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line  # noqa: E402 (sibling script module)
from peak_memory import SUBPROCESS_ENV, PeakMemory  # noqa: E402  (sibling script module)

from vsrblocks.attention.gaussian_cross_frame import GaussianCrossFrameAttention  # noqa: E402

CHANNELS, FRAMES = 128, 7
DEFAULT_ROWS = [
    "dense:64x112",
    "ours:64x112",
    "window:64x112",
    "ours:180x320",
    "dense:180x320",
    "stcsa:64x64",
    "stcsa:180x320",
]


def dense_readout(
    block: GaussianCrossFrameAttention, normed: torch.Tensor, query: torch.Tensor, dist: torch.Tensor
) -> torch.Tensor:
    """The official ``nonlocal_attention`` cross-frame read-out as written upstream: the stored ``(HW x HW)``
    squared distances ``dist``, the full Gaussian and one full ``(HW x HW)`` softmax matrix per frame.
    Same inputs and output as :meth:`GaussianCrossFrameAttention.attend`: ``(B, T*Ci, H, W)``."""
    b, t, c, h, w = normed.shape
    query = query.flatten(2).transpose(1, 2)  # (B, N, Ci)
    gauss = torch.exp(-0.5 * dist / block.std**2)  # (N, N)
    reads = []
    for f in range(t):
        key = block.theta(normed[:, f]).flatten(2)  # (B, Ci, N)
        value = block.g(normed[:, f]).flatten(2).transpose(1, 2)  # (B, N, Ci)
        corr = torch.softmax(torch.bmm(query, key), dim=-1) * gauss  # (B, N, N)
        reads.append(torch.bmm(corr, value).transpose(1, 2).reshape(b, -1, h, w))
    return torch.cat(reads, dim=1)


def distance_matrix(height: int, width: int) -> torch.Tensor:
    """The official stored ``D``: ``(HW, HW)`` squared pixel distances, float32."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack((xs.flatten(), ys.flatten()), 1).float()
    return ((pos[:, None] - pos[None]) ** 2).sum(-1)


class DenseOfficialStyle(nn.Module):
    """The official ``nonlocal_attention`` cross-frame part as written upstream: ``D`` stored for one size, full
    ``(HW x HW)`` matrices per frame. Shares the weights of a :class:`GaussianCrossFrameAttention`."""

    def __init__(self, block: GaussianCrossFrameAttention, height: int, width: int) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("D", distance_matrix(height, width))  # (HW, HW)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        blk = self.block
        normed = blk.normalize(clip)
        return blk.W_z(dense_readout(blk, normed, blk.phi(normed[:, blk.center_index]), self.D))


def _stcsa():
    """``vsrblocks.attention.STCSA`` (written separately), or ``None`` when it cannot be imported."""
    try:
        from vsrblocks.attention import STCSA  # noqa: PLC0415
    except ImportError:
        try:
            from vsrblocks.attention.stcsa import STCSA  # noqa: PLC0415
        except ImportError:
            return None
    return STCSA


def _dense_gb(height: int, width: int) -> float:
    """Size of one (HW)^2 float32 matrix in GB (the official code keeps D, the Gaussian and the per-frame
    attention matrices live: at least 3-4 of them)."""
    n = height * width
    return n * n * 4 / 1e9


def _build(kind: str, height: int, width: int, device: str):
    torch.manual_seed(0)
    if kind == "stcsa":
        module_cls = _stcsa()
        module = module_cls(channels=64, patch_size=8, num_heads=1)
        clip = torch.randn(1, FRAMES, 64, height, width)
    else:
        module = GaussianCrossFrameAttention(
            CHANNELS, FRAMES, zero_init=False, window_sigmas=4.0 if kind == "window" else None
        )
        if kind == "dense":
            module = DenseOfficialStyle(module, height, width)
        clip = torch.randn(1, FRAMES, CHANNELS, height, width)
    return module.to(device), clip.to(device)


def measure(kind: str, height: int, width: int, device: str, reps: int, warmup: int, train: bool) -> dict:
    module, clip = _build(kind, height, width, device)
    if train:
        clip.requires_grad_(True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    memory = PeakMemory(device)
    memory.start()
    times = []
    for i in range(warmup + reps):
        sync()
        start = time.perf_counter()
        if train:
            module(clip).square().mean().backward()
        else:
            with torch.inference_mode():
                module(clip)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times), "peak_mib": memory.peak_mib()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", nargs="*", default=DEFAULT_ROWS, help="kind:HxW with kind in ours, window, dense, stcsa"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--train", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--max-dense-gb", type=float, default=4.0, help="skip dense rows whose (HW)^2 matrix is larger")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per row before it is reported as skipped"
    )
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.single:
        kind, size = args.single.split(":")
        h, w = map(int, size.split("x"))
        if args.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        print(json.dumps(measure(kind, h, w, args.device, args.reps, args.warmup, args.train)))
        return

    pass_name = "fwd+bwd" if args.train else "forward"
    print(machine_line(args.device))
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch=1 T={FRAMES} reps={args.reps} "
        f"warmup={args.warmup} pass={pass_name} torch={torch.__version__}"
    )
    header = f"| {'block':44s} | {'LR size':8s} | {'ms / pass':>10s} | {'peak mem (MiB)':>14s} | {'note':50s} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    names = {
        "ours": "GaussianCrossFrameAttention (ours, chunked)",
        "window": "GaussianCrossFrameAttention window_sigmas=4",
        "dense": "dense official-style (HW x HW per frame)",
        "stcsa": "STCSA (C=64, p=8, 1 head)",
    }
    for row in args.rows:
        kind, size = row.split(":")
        h, w = map(int, size.split("x"))
        name = names.get(kind, kind)
        note, result = "", None
        if kind not in names:
            note = "unknown kind"
        elif kind == "stcsa":
            if _stcsa() is None:
                note = "not available"
        elif kind == "dense":
            one = _dense_gb(h, w)
            note = f"one (HW)^2 fp32 matrix = {one * 1e3:.0f} MB; stored D not counted"
            if one > args.max_dense_gb:
                note = f"skipped: one (HW)^2 matrix = {one:.1f} GB, needs >= 3"
        if kind in names and not note.startswith(("skipped", "not available")):
            cmd = [
                sys.executable,
                __file__,
                "--single",
                row,
                "--device",
                args.device,
                "--reps",
                str(args.reps),
                "--warmup",
                str(args.warmup),
            ] + (["--train"] if args.train else [])
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=SUBPROCESS_ENV)
                if done.returncode == 0:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                else:
                    lines = done.stderr.strip().splitlines()
                    note = "failed: " + (lines[-1][:42] if lines else f"exit {done.returncode}")
            except subprocess.TimeoutExpired:
                note = f"skipped: over {args.timeout:.0f} s"
        if kind == "ours":
            note = note or "exact; query chunks of <= 64 MiB"
        elif kind == "window":
            note = note or "err <= exp(-8) max|v| = 3.4e-4 max|v|"
        if result is None:
            print(f"| {name:44s} | {size:8s} | {'-':>10s} | {'-':>14s} | {note:50s} |")
        else:
            print(f"| {name:44s} | {size:8s} | {result['ms']:10.1f} | {result['peak_mib']:14.0f} | {note:50s} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
