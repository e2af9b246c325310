"""How often does a two-process ``torchrun`` training run exit cleanly? Launches N runs of a tiny MANA
training (gloo, CPU) and counts the runs whose every rank exited 0, printing a table.

    python benchmarks/torchrun_exits.py --runs 20

A run that wrote its outputs must exit 0 on every rank; before the ordered shutdown of
``reference_models.training.distributed`` about a third of them aborted at interpreter exit
("terminate called without an active exception").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _clips(root: Path, clips: int = 4, t: int = 3, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c in range(clips):
        folder = root / f"clip{c}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, (size + t, size + t, 3), dtype=np.uint8)
        for k in range(t):
            Image.fromarray(base[k : k + size, k : k + size]).save(folder / f"{k:03d}.png")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    clean, failures, times = 0, [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = _clips(Path(tmp) / "data")
        for run in range(args.runs):
            out = Path(tmp) / f"run{run}"
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(args.nproc),
                "-m",
                "reference_models",
                "train",
                "mana",
                "--data",
                str(data),
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--patch-size",
                "4",
                "--schedule",
                "mana-3stage",
                "--stage-fractions",
                "1",
                "1",
                "1",
                "--val-holdout",
                "2",
                "--val-frames",
                "1",
                "--val-crop",
                "16",
                "--val-every",
                "3",
                "--quiet",
                "--device",
                "cpu",
                "--output",
                str(out),
            ]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            times.append(time.perf_counter() - start)
            outputs = all((out / name).exists() for name in ("last.pt", "log.json"))
            if result.returncode == 0 and outputs:
                clean += 1
            else:
                tail = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()][-3:]
                failures.append((run, result.returncode, outputs, " | ".join(tail)[:300]))
    print("| runs | clean exits | failed | median s/run |\n|---|---|---|---|")
    print(f"| {args.runs} | {clean} | {args.runs - clean} | {sorted(times)[len(times) // 2]:.1f} |")
    for run, code, outputs, tail in failures:
        print(f"run {run}: exit {code}, outputs {'written' if outputs else 'missing'}: {tail}")
    return 0 if clean == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
