"""memory_budget: sizes, the tile choice, the live-tensor counter, DASAA and MAFnet memory linear in pixels in
eval mode, a chosen tile keeping the measured peak under the budget, and ``run --max-memory``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reference_models
from reference_models.cli import main
from reference_models.inference.memory_budget import (
    SAFETY_FACTOR,
    LiveTensorBytes,
    MemoryEstimate,
    choose_tile,
    estimate_memory,
    format_size,
    parse_size,
)
from tests.reference_models.helpers import random_frames, write_folder

ROOT = Path(__file__).resolve().parents[3]


def test_parse_and_format_sizes():
    assert parse_size("4G") == 4 * 2**30
    assert parse_size("512m") == parse_size("512MiB") == parse_size("512 MB") == 512 * 2**20
    assert parse_size("1.5G") == 3 * 2**29
    assert parse_size("1000") == 1000
    for bad in ("", "G", "-1G", "0", "4X", "four"):
        with pytest.raises(ValueError, match="positive size"):
            parse_size(bad)
    assert format_size(3 * 2**29) == "1.5 GiB"
    assert format_size(parse_size("512M")) == "512 MiB"


def test_choose_tile_is_the_largest_that_fits():
    est = MemoryEstimate(fixed=1e6, per_pixel=2000.0)
    assert choose_tile(est, 90, 120, budget=est.peak(90, 120)) is None
    budget = 50e6
    tile = choose_tile(est, 480, 640, budget, tile_overlap=16)
    assert est.peak(tile, tile) <= budget < est.peak(tile + 1, tile + 1)
    # A frame narrower than the tile: only the tile's height is cut.
    narrow = choose_tile(est, 4000, 40, budget)
    assert est.peak(narrow, 40) <= budget < est.peak(narrow + 1, 40)
    with pytest.raises(ValueError, match="too small"):
        choose_tile(est, 480, 640, budget=est.peak(16, 16), tile_overlap=16)
    with pytest.raises(ValueError, match="too small"):
        choose_tile(est, 480, 640, budget=est.peak(63, 63), minimum=64)


def test_live_tensor_bytes_counts_views_once_and_frees():
    with LiveTensorBytes() as live:
        a = torch.zeros(1000)
        view = a[10:]  # a view: no new storage
        b = a + 1
        del a, view
        c = b * 2  # a's storage is gone: still two alive
        del b, c
    assert (live.peak, live.largest, live.now) == (8000, 4000, 0)


@pytest.mark.parametrize("name", ["dasaa", "mafnet"])
def test_model_memory_is_linear_in_pixels_in_eval(name):
    """Tiny presets, 32x32 -> 64x64 LR (four times the pixels): the largest tensor and the peak of all live
    tensors grow at most about four times (a pixel-by-pixel map would grow sixteen times). MAFnet runs 2 frames:
    its self-attention is per frame, so the number of frames scales the memory at both sizes alike."""
    torch.manual_seed(0)
    model = reference_models.create_model(name, "tiny", **({"num_frames": 2} if name == "mafnet" else {})).eval()
    measured = []
    for side in (32, 64):
        with torch.no_grad(), LiveTensorBytes() as live:
            model(torch.rand(1, model.num_frames, 3, side, side))
        measured.append((live.largest, live.peak))
    (largest_small, peak_small), (largest_big, peak_big) = measured
    assert largest_big <= 4.5 * largest_small and peak_big <= 4.5 * peak_small, measured


def test_estimate_is_linear_and_grows_with_batch():
    torch.manual_seed(0)
    model = reference_models.create_model("dasaa", "tiny").eval()
    one, two = estimate_memory(model, batch=1), estimate_memory(model, batch=2)
    assert one.per_pixel > 0 and two.per_pixel == pytest.approx(2 * one.per_pixel, rel=0.2)
    with torch.no_grad(), LiveTensorBytes() as live:
        model(torch.rand(1, 5, 3, 64, 56))
    assert live.peak <= one.peak(64, 56) and live.peak >= one.peak(64, 56) / SAFETY_FACTOR / 1.2


_MEASURE = """
import sys, torch
from benchmarks.peak_memory import PeakMemory
from reference_models.inference.upscale import forward_tiled
from reference_models.inference.memory_budget import choose_tile, estimate_memory
from reference_models.registry import create_model
torch.manual_seed(0)
model = create_model("dasaa", "tiny").eval()
budget = int(sys.argv[1])
tile = choose_tile(estimate_memory(model), 80, 96, budget)
clip = torch.rand(1, 5, 3, 80, 96)
meter = PeakMemory("cpu")
meter.start()
with torch.no_grad():
    forward_tiled(model, clip, tile, 16)
print(tile, int(meter.peak_mib() * 2**20))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure the peak")
def test_chosen_tile_keeps_the_measured_peak_under_the_budget():
    """DASAA tiny on a 96x80 clip under a 24 MiB budget (the whole frame needs about 64 MiB): the peak resident
    memory of the tiled pass (2 x 3 tiles), measured in a fresh process, stays under the budget."""
    from benchmarks.peak_memory import SUBPROCESS_ENV

    budget = 24 * 2**20
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(budget)],
        cwd=ROOT,
        env={**SUBPROCESS_ENV, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    tile, peak = map(int, result.stdout.split())
    assert 16 < tile < 80
    assert peak <= budget, (tile, peak)


def _frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]


def test_run_max_memory_tiles_once_and_equals_explicit_tiles(tmp_path, capsys):
    src = write_folder(tmp_path / "in", random_frames(2, 40, 48))  # two windows: one warning for both
    common = ["run", "dasaa", "--preset", "tiny", "-i", str(src), "-q", "--device", "cpu", "--random-weights"]
    torch.manual_seed(0)
    assert main([*common, "-o", str(tmp_path / "auto"), "--max-memory", "4M"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "--max-memory" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: 48x40 frames"), err
    tile = int(lines[0].split("running ")[1].split("x")[0])
    torch.manual_seed(0)
    assert main([*common, "-o", str(tmp_path / "explicit"), "--tile", str(tile)]) == 0
    for auto, explicit in zip(_frames(tmp_path / "auto"), _frames(tmp_path / "explicit"), strict=True):
        np.testing.assert_array_equal(auto, explicit)
    torch.manual_seed(0)
    assert main([*common, "-o", str(tmp_path / "whole"), "--max-memory", "8G"]) == 0
    assert "--max-memory" not in capsys.readouterr().err


@pytest.mark.parametrize(("size", "message"), [("4X", "positive size"), ("1K", "too small")])
def test_run_max_memory_errors_are_one_line(tmp_path, capsys, size, message):
    src = write_folder(tmp_path / "in", random_frames(1, 24, 24))
    code = main(
        [
            "run",
            "dasaa",
            "--preset",
            "tiny",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "--max-memory",
            size,
            "--random-weights",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and message in err[-1], err
