"""Forward passes with glibc's default allocator settings against ``keep_freed_memory`` (what the command line sets).

    python benchmarks/allocator.py                                  # the standard networks and VSRT, 64x64 LR
    python benchmarks/allocator.py --models mana vsrt --size 64x112 --rounds 3

Per model (its paper preset, ``num_frames`` frames of ``--size`` LR, batch 1, random weights, seed 0), two fresh
subprocesses per round, one per setting, the order alternating from round to round: each builds the model, runs
one warm-up pass and ``--reps`` timed passes under ``torch.inference_mode`` with ``--threads`` threads, and reports
the median wall seconds, the minor page faults per pass (``ru_minflt``) and the peak resident set of the process (``ru_maxrss``).
Reported: medians over the rounds, and the ratio kept / default. ``keep_freed_memory`` is
:func:`reference_models.allocator.keep_freed_memory`; every ``MALLOC_*`` variable is removed from the subprocesses'
environment, since it would make that function change nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from machine import machine_line  # noqa: E402 (sibling script module)

SETTINGS = ("default", "keep")

_CHILD = """
import json, resource, statistics, sys, time
import torch
import reference_models
from reference_models.allocator import keep_freed_memory
name, setting, height, width, threads, reps = sys.argv[1:]
applied = keep_freed_memory() if setting == "keep" else False
torch.set_num_threads(int(threads))
torch.manual_seed(0)
model = reference_models.create_model(name, "paper").eval()
clip = torch.rand(1, model.num_frames, 3, int(height), int(width))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    model(clip)
    seconds, page_faults = [], []
    for _ in range(int(reps)):
        before, start = faults(), time.perf_counter()
        model(clip)
        seconds.append(time.perf_counter() - start)
        page_faults.append(faults() - before)
print(json.dumps({"applied": applied, "seconds": statistics.median(seconds),
                  "faults": statistics.median(page_faults),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(name: str, setting: str, height: int, width: int, threads: int, reps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-c", _CHILD, name, setting, str(height), str(width), str(threads), str(reps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if setting == "keep" and not result["applied"]:
        raise SystemExit("keep_freed_memory() changed nothing here (not glibc?); nothing to compare")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["basicvsr", "iconvsr", "basicvsrpp", "edvr", "vsrt"])
    parser.add_argument("--size", default="64x64", help="LR frame size HxW")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    torch.set_num_threads(args.threads)
    print(machine_line())
    print(
        f"paper presets, 1 x num_frames x 3 x {height} x {width}, float32, medians of {args.reps} passes, {args.rounds} rounds\n"
    )
    print(
        "| model | default s | kept s | kept / default | faults per pass (default / kept) | peak MiB (default / kept) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.models:
        results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for r in range(args.rounds):
            for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                results[setting].append(run_child(name, setting, height, width, args.threads, args.reps))
        med = {
            s: {k: statistics.median(x[k] for x in results[s]) for k in ("seconds", "faults", "peak_mib")}
            for s in SETTINGS
        }
        d, k = med["default"], med["keep"]
        print(
            f"| {name} | {d['seconds']:.3f} | {k['seconds']:.3f} | {k['seconds'] / d['seconds']:.2f} "
            f"| {d['faults']:.0f} / {k['faults']:.0f} | {d['peak_mib']:.0f} / {k['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
