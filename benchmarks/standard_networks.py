"""The field's standard VSR networks, ours against the straightforward BasicSR form with the same weights, on CPU.

    python benchmarks/standard_networks.py                          # all four, 1x5x3x64x64, 2 threads, 5 rounds
    python benchmarks/standard_networks.py --networks edvr --rounds 3 --size 64x64 --frames 5 --threads 2
    python benchmarks/standard_networks.py --networks basicvsrpp --profile   # where each form's time goes

Per network, at its released configuration (BasicVSR 64 x 30 blocks, IconVSR REDS, BasicVSR++ 64 x 7, EDVR-M
with TSA): the BasicSR form (``benchmarks/basicsr_forms.py``: plain ``nn.Conv2d`` stacks, torchvision's
``deform_conv2d`` with BasicSR's offset layout, ``grid_sample`` warping, loops over frames, NCHW) is built with
PyTorch's default random initialisation (seed 0); its ``state_dict`` (BasicSR's names) goes through our
``from_official`` converter into ``create_model(name, preset)`` (a strict load: the same architecture), so both
forms hold the same weights. The outputs on one random clip must agree within ``--tolerance`` (max |diff|). Then,
under ``torch.no_grad`` and ``torch.set_num_threads(threads)``, one warm-up pass each and ``--rounds`` rounds,
each timing one forward pass of both forms, the order alternating from round to round so that a shared
machine's load hits both alike. Reported: medians of wall seconds, ours / BasicSR's, and the ratio of CPU
seconds (user + system of the process, all threads), which a loaded machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from basicsr_forms import BasicVSRForm, BasicVSRPlusPlusForm, EDVRForm, IconVSRForm  # noqa: E402
from streaming import cpu_description  # noqa: E402

import reference_models  # noqa: E402

#: name -> (our preset, BasicSR form class, BasicSR's constructor keywords at the released configuration)
NETWORKS: dict[str, tuple[str, type[nn.Module], dict[str, Any]]] = {
    "basicvsr": ("released", BasicVSRForm, {"num_feat": 64, "num_block": 30}),
    "iconvsr": (
        "released-reds",
        IconVSRForm,
        {"num_feat": 64, "num_block": 30, "keyframe_stride": 5, "temporal_padding": 2},
    ),
    "basicvsrpp": (
        "released",
        BasicVSRPlusPlusForm,
        {"mid_channels": 64, "num_blocks": 7, "max_residue_magnitude": 10},
    ),
    "edvr": (
        "paper",
        EDVRForm,
        {
            "num_feat": 64,
            "num_frame": 5,
            "deformable_groups": 8,
            "num_extract_block": 5,
            "num_reconstruct_block": 10,
            "with_tsa": True,
        },
    ),
}


def same_weights(name: str) -> tuple[nn.Module, nn.Module]:
    """(ours, BasicSR form), eval mode, the same weights: the form's state_dict through ``from_official``."""
    preset, form_class, kwargs = NETWORKS[name]
    torch.manual_seed(0)
    form = form_class(**kwargs).eval()
    converted = reference_models.from_official(name, form.state_dict(), **kwargs)
    ours = reference_models.create_model(name, preset).eval()
    ours.load_state_dict(converted.state_dict())
    return ours, form


def timed(model: nn.Module, clip: torch.Tensor) -> tuple[float, float]:
    """Wall and CPU seconds of one forward pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    model(clip)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, clip: torch.Tensor, rounds: int, tolerance: float) -> dict[str, float]:
    ours, form = same_weights(name)
    with torch.no_grad():
        diff = (ours(clip) - form(clip)).abs().max().item()  # also the warm-up pass of each
        if not diff < tolerance:
            raise SystemExit(f"{name}: outputs differ by {diff:.3g} (tolerance {tolerance:g}); timings would mislead")
        times: dict[str, list[tuple[float, float]]] = {"ours": [], "form": []}
        for r in range(rounds):
            order = (("ours", ours), ("form", form)) if r % 2 == 0 else (("form", form), ("ours", ours))
            for key, model in order:
                times[key].append(timed(model, clip))
    wall = {key: statistics.median(t[0] for t in ts) for key, ts in times.items()}
    cpu = {key: statistics.median(t[1] for t in ts) for key, ts in times.items()}
    return {
        "ours": wall["ours"],
        "form": wall["form"],
        "ratio": wall["ours"] / wall["form"],
        "cpu_ratio": cpu["ours"] / cpu["form"],
        "diff": diff,
    }


def profile(name: str, clip: torch.Tensor, rows: int = 12) -> None:
    """One forward pass of each form under ``torch.profiler``: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    ours, form = same_weights(name)
    with torch.no_grad():
        for label, model in (("ours", ours), ("BasicSR form", form)):
            model(clip)
            with profiler(activities=[ProfilerActivity.CPU]) as prof:
                model(clip)
            print(f"\n{name}, {label}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--size", default="64x64", help="LR frame size HxW")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--profile", action="store_true", help="profile one pass of each form instead of timing")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    clip = torch.rand(1, args.frames, 3, h, w, generator=torch.Generator().manual_seed(1))
    if args.profile:
        for name in args.networks:
            profile(name, clip)
        return
    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, float32, input 1x{args.frames}x3x{h}x{w}, {args.rounds} rounds (medians)\n")
    print("| network | ours s | BasicSR form s | ratio (wall) | ratio (CPU time) | max \\|diff\\| |")
    print("|---|---|---|---|---|---|")
    for name in args.networks:
        m = measure(name, clip, args.rounds, args.tolerance)
        label = f"{name} ({NETWORKS[name][0]})"
        print(
            f"| {label} | {m['ours']:.3f} | {m['form']:.3f} | {m['ratio']:.2f} | {m['cpu_ratio']:.2f} "
            f"| {m['diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
