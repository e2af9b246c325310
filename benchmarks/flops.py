"""Parameters and MACs of the reference models' presets, one table.

    python benchmarks/flops.py                              # paper presets of all four models
    python benchmarks/flops.py --models dasaa --presets paper tiny --sizes 32x32 64x112

Two figures per size (see ``reference_models/inference/flops.py``): ``conv`` = thop-style MACs of Conv/Linear layers
only (what most papers of 2019-2022 printed as "FLOPs"), ``total`` = every matrix product included
(attention), from ``torch.utils.flop_counter``. Counting runs on the meta device (shapes only, seconds);
a model whose forward cannot run on meta falls back to a real CPU pass. A model that fails to build or run
is listed with its error.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine_line

import reference_models
from reference_models.inference.flops import count_macs, count_parameters

SIZES = ["32x32", "64x64", "64x112"]


def measure(name: str, preset: str, sizes: list[tuple[int, int]]) -> dict:
    row: dict = {"model": name, "preset": preset}
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = reference_models.create_model(name, preset).eval()
            row["params"] = count_parameters(model)
            for h, w in sizes:
                clip = (
                    torch.rand(1, model.num_frames, 3, h, w, device=device)
                    if device == "cpu"
                    else torch.empty(1, model.num_frames, 3, h, w, device=device)
                )
                row[(h, w)] = count_macs(model, clip)
            row["device"] = device
            return row
        except Exception as error:  # noqa: BLE001 - a table row per failure is the point
            row["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:100]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="default: all registered models")
    parser.add_argument("--presets", nargs="+", default=["paper"])
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="LR sizes HxW (default: %(default)s)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    names = args.models or reference_models.list_models()

    header = ["model", "preset", "params (M)"] + [f"{h}x{w} conv / total (G)" for h, w in sizes] + ["counted on"]
    print(machine_line())
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        for preset in args.presets:
            start = time.perf_counter()
            try:
                row = measure(name, preset, sizes)
            except Exception as error:  # noqa: BLE001
                row = {"model": name, "preset": preset, "error": f"{type(error).__name__}: {error}"[:100]}
            if any(size in row for size in sizes):
                cells = [f"{row[s]['conv'] / 1e9:.2f} / {row[s]['total'] / 1e9:.2f}" for s in sizes]
                tail = f"{row['device']}, {time.perf_counter() - start:.0f} s"
                print(f"| {name} | {preset} | {row['params'] / 1e6:.3f} | " + " | ".join(cells) + f" | {tail} |")
            else:
                print(f"| {name} | {preset} | - | " + " | ".join("-" for _ in sizes) + f" | failed: {row['error']} |")


if __name__ == "__main__":
    main()
