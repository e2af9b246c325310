"""ONNX Runtime beside eager PyTorch on this CPU, and each model's export status, one table.

    python benchmarks/export.py                           # tiny presets, 1 window of 32x32 LR
    python benchmarks/export.py --presets tiny paper --size 64x64 --reps 5

For each model and preset: export to ONNX (random weights; parameters initialised to zero are re-drawn so
every path counts), then time ``--reps`` forward passes of one window after one warm-up, PyTorch and ONNX
Runtime interleaved (the CPU is shared: medians of interleaved runs), and report the largest absolute
difference of the outputs. Status columns: ``onnx`` and ``exported-program`` are "dynamic" when the file
reproduces eager PyTorch within 1e-4 at the benchmark size, which differs from the 34x38 export example;
``torchscript`` is traced and runs at its traced height and width only ("fixed HxW"), or "failed".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from machine import machine_line  # noqa: E402 (sibling script module)

import reference_models
from reference_models.export.exported_program import example_clip, export_program, load_program, save_program
from reference_models.export.metadata import model_metadata
from reference_models.export.onnx import export_onnx
from reference_models.export.onnx_runtime import OnnxRuntimeModel
from reference_models.export.torchscript import export_torchscript, load_torchscript


def randomised(name: str, preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = reference_models.create_model(name, preset).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    return model


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def measure(name: str, preset: str, height: int, width: int, reps: int, folder: Path) -> dict:
    model = randomised(name, preset)
    clip = torch.rand(1, model.num_frames, 3, height, width, generator=torch.Generator().manual_seed(1))
    row: dict = {"model": name, "preset": preset}
    start = time.perf_counter()
    export_onnx(model, folder / f"{name}.onnx")
    row["export_s"] = time.perf_counter() - start
    runtime = OnnxRuntimeModel(folder / f"{name}.onnx")
    eager_times, ort_times = [], []
    with torch.inference_mode():
        for i in range(reps + 1):
            t0 = time.perf_counter()
            expected = model(clip)
            t1 = time.perf_counter()
            got = runtime(clip)
            t2 = time.perf_counter()
            if i:
                eager_times.append(t1 - t0)
                ort_times.append(t2 - t1)
    row["eager_ms"], row["ort_ms"] = 1000 * statistics.median(eager_times), 1000 * statistics.median(ort_times)
    row["onnx_err"] = max_error(got, expected)
    row["onnx"] = "dynamic" if row["onnx_err"] <= 1e-4 else "mismatch"
    try:
        save_program(export_program(model), folder / f"{name}.pt2", model_metadata(model))
        with torch.no_grad():
            error = max_error(load_program(folder / f"{name}.pt2")[0].module()(clip), expected)
        row["exported-program"] = "dynamic" if error <= 1e-4 else f"error {error:.1e}"
    except Exception as exc:  # the table reports any failure instead of stopping
        guard = str(exc).split("Guard failed: ", 1)
        # a size outside the range torch.export recorded (e.g. VSRT's H, W >= 33) is a limit, not a failure
        row["exported-program"] = (
            f"size outside its range ({guard[1][:40]})" if len(guard) == 2 else (f"failed ({type(exc).__name__})")
        )
    try:
        traced_at = example_clip(model, height, width, batch=1)
        export_torchscript(model, folder / f"{name}.ts", example=traced_at)
        with torch.no_grad():
            error = max_error(load_torchscript(folder / f"{name}.ts")[0](clip), expected)
        row["torchscript"] = f"fixed {height}x{width}" if error <= 1e-4 else f"error {error:.1e}"
    except Exception as exc:
        row["torchscript"] = f"failed ({type(exc).__name__})"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=reference_models.list_models())
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument("--size", default="32x32", help="LR HxW of the timed window (default 32x32)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(machine_line())
    print(f"LR {height}x{width}, batch 1, {torch.get_num_threads()} threads, median of {args.reps} interleaved runs\n")
    header = "| model | preset | PyTorch ms | ONNX Runtime ms | max abs error | onnx | exported-program | torchscript | export s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for name in args.models:
                r = measure(name, preset, height, width, args.reps, Path(tmp))
                print(
                    f"| {name} | {preset} | {r['eager_ms']:.1f} | {r['ort_ms']:.1f} | {r['onnx_err']:.1e} | {r['onnx']} "
                    f"| {r['exported-program']} | {r['torchscript']} | {r['export_s']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
