"""Whole-sequence streaming of recurrent models: exact against the whole-clip forward with features spilled
to disk, memory that does not grow with the number of frames, segments, and clean interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_models.inference.memory_budget import LiveTensorBytes
from reference_models.inference.precision import low_precision_weights, mixed_precision
from reference_models.inference.streaming import SweepProgress, is_recurrent, stream_frames, stream_upscale
from reference_models.inference.upscale import upscale_clip, upscale_frames
from reference_models.registry import create_model, list_models
from tests.reference_models.inference.recurrent_toy import RecurrentToy
from tests.strategies import seeded_rand, seeds
from vsrblocks.recurrent import SpillingFeatureStore

ROOT = Path(__file__).resolve().parents[3]
NETWORKS = [name for name in ("basicvsr", "iconvsr", "basicvsrpp") if name in list_models()]


def _toy(grid: bool, seed: int = 0) -> RecurrentToy:
    torch.manual_seed(seed)
    return RecurrentToy(grid=grid).eval()


def _streamed(model, clip: torch.Tensor, **options) -> torch.Tensor:
    out: dict[int, torch.Tensor] = {}
    stream_upscale(model, clip[0].unbind(0), emit=out.__setitem__, **options)
    assert sorted(out) == list(range(clip.shape[1]))
    return torch.stack([out[i] for i in range(len(out))])[None]


def _assert_exact(streamed: torch.Tensor, whole: torch.Tensor) -> None:
    # The same operations on the same values (a spilled tensor comes back bit for bit): only summation-order
    # differences of a kernel could separate them, far below this.
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


@settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    grid=st.booleans(),
    frames=st.integers(1, 6),
    height=st.integers(5, 9),
    width=st.integers(5, 9),
    budget=st.sampled_from([0, 700, 10**9]),
    seed=seeds,
)
def test_streamed_with_spilling_equals_whole_clip_forward_toy(tmp_path, grid, frames, height, width, budget, seed):
    model = _toy(grid, seed)
    clip = seeded_rand((1, frames, 3, height, width), seed)
    with torch.no_grad():
        whole = model(clip)
    _assert_exact(_streamed(model, clip, max_bytes=budget, spill_dir=tmp_path), whole)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", NETWORKS)
def test_streamed_with_spilling_equals_whole_clip_forward(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    clip = seeded_rand((1, 5, 3, 16, 16), 1)
    with torch.no_grad():
        whole = model(clip)
    spilled = []  # spill files seen while the run is on
    # 2 KiB: a handful of 8-channel 16x16 maps; everything else goes to disk.
    _assert_exact(
        _streamed(
            model,
            clip,
            max_bytes=2048,
            spill_dir=tmp_path,
            report=lambda state: spilled.append(len(list(tmp_path.rglob("*.bin")))),
        ),
        whole,
    )
    assert max(spilled) > 0 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", NETWORKS)
def test_bfloat16_stream_with_spilling_equals_the_bfloat16_forward(tmp_path, monkeypatch, name):
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    clip = seeded_rand((1, 4, 3, 12, 12), 3)
    with torch.no_grad(), low_precision_weights(model), mixed_precision(model):
        whole = model(clip).float()
    stored: set[torch.dtype] = set()
    put = SpillingFeatureStore.put
    monkeypatch.setattr(
        SpillingFeatureStore, "put", lambda self, key, i, value: (stored.add(value.dtype), put(self, key, i, value))[1]
    )
    streamed = _streamed(model, clip, max_bytes=1024, spill_dir=tmp_path, precision="bfloat16")
    # the same bfloat16 operations, spilled features back bit for bit
    _assert_exact(streamed, whole)
    assert torch.bfloat16 in stored and streamed.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("grid", [False, True])
def test_upscale_clip_and_frames_stream_recurrent_models_whole(tmp_path, grid):
    model = _toy(grid)
    clip = seeded_rand((7, 3, 8, 10), 2)
    with torch.no_grad():
        whole = model(clip[None])[0]
    _assert_exact(upscale_clip(model, clip, max_bytes=500, spill_dir=str(tmp_path)), whole)
    uint8 = (clip * 255).round().to(torch.uint8)
    with torch.no_grad():
        whole8 = model((uint8.float() / 255)[None])[0]
    # a generator input is read once, its frames kept in the store (spilled too)
    generated = list(upscale_frames(model, (f for f in uint8), max_bytes=500, spill_dir=str(tmp_path)))
    _assert_exact(torch.stack(generated), whole8)
    assert not list(tmp_path.iterdir())


def test_segments_are_the_forward_of_each_segment_and_short_clips_are_not_padded():
    model = _toy(True)
    clip = seeded_rand((10, 3, 6, 6), 3)
    out = torch.stack(list(upscale_frames(model, clip.unbind(0), max_seq_len=4, seq_overlap=1)))
    with torch.no_grad():
        # windows start every 3 frames: [0, 4), [3, 7), [6, 10); each frame from the window whose centre is nearest
        first, second, third = model(clip[None, 0:4])[0], model(clip[None, 3:7])[0], model(clip[None, 6:10])[0]
    _assert_exact(out[:4], first[:4])
    _assert_exact(out[4:7], second[1:4])
    _assert_exact(out[7:], third[1:])
    short = torch.stack(list(upscale_frames(model, clip[:3].unbind(0), max_seq_len=4)))
    with torch.no_grad():
        _assert_exact(short, model(clip[None, :3])[0])
    with pytest.raises(ValueError, match="does not cut frames into tiles"):
        list(upscale_frames(model, clip.unbind(0), tile=16))


@pytest.mark.parametrize("grid", [False, True])
def test_peak_memory_does_not_grow_with_the_number_of_frames(tmp_path, grid):
    model = _toy(grid)
    budget = 1500
    peaks = []
    for frames in (4, 16):
        # separate frames: a view of one clip tensor would count the clip's whole storage
        inputs = [frame.clone() for frame in seeded_rand((frames, 3, 8, 8), frames)]
        with LiveTensorBytes() as live:
            stream_upscale(model, inputs, emit=lambda i, sr: None, max_bytes=budget, spill_dir=tmp_path)
        peaks.append(live.peak)
    # 4 frames of features alone would be 4 * (1 + 4 branches) * 4 ch * 64 px * 4 B = 20 KiB; 16 frames 80 KiB.
    assert peaks[1] <= peaks[0] + 1024, peaks
    assert peaks[1] < 16 * 5 * 4 * 64 * 4


def test_store_never_holds_more_than_its_budget(tmp_path, monkeypatch):
    from vsrblocks.recurrent import SpillingFeatureStore

    seen = []
    original = SpillingFeatureStore.put

    def put(self, key, index, value):
        original(self, key, index, value)
        seen.append(self.resident_bytes)

    monkeypatch.setattr(SpillingFeatureStore, "put", put)
    stream_upscale(
        _toy(True), seeded_rand((12, 3, 8, 8), 0).unbind(0), emit=lambda i, sr: None, max_bytes=1000, spill_dir=tmp_path
    )
    assert len(seen) > 12 and max(seen) <= 1000


def test_progress_reports_every_sweep_and_an_eta():
    model = _toy(True)
    states = []
    stream_upscale(model, seeded_rand((3, 3, 6, 6), 0).unbind(0), emit=lambda i, sr: None, report=states.append)
    assert [(s.branch, s.done) for s in states] == [
        (b, d) for b in ("backward_1", "forward_1", "backward_2", "forward_2") for d in (1, 2, 3)
    ]
    assert states[-1].eta == 0 and all(s.sweeps == 4 and s.frames == 3 for s in states)
    assert SweepProgress(model, 3).sweeps == 4 and is_recurrent(model)
    assert not any(h for cell in model.modules() for h in cell._forward_hooks.values())  # hooks removed


def test_closing_the_generator_stops_the_worker_and_removes_the_spill_folder(tmp_path):
    model = _toy(True)
    outputs = stream_frames(model, seeded_rand((30, 3, 8, 8), 0).unbind(0), max_bytes=0, spill_dir=tmp_path)
    next(outputs)
    assert list(tmp_path.iterdir())
    outputs.close()
    assert not list(tmp_path.iterdir())
    assert not any(t.name == "stream_frames" for t in threading.enumerate())


def test_a_failing_model_raises_in_the_consumer_and_cleans_up(tmp_path):
    model = _toy(False)

    def broken(*args):
        raise RuntimeError("cell exploded")

    model.propagation.forward_cell.register_forward_hook(lambda *a: broken())
    with pytest.raises(RuntimeError, match="cell exploded"):
        list(stream_frames(model, seeded_rand((5, 3, 8, 8), 0).unbind(0), max_bytes=0, spill_dir=tmp_path))
    assert not list(tmp_path.iterdir())


_RUN_TOY = textwrap.dedent(
    """
    import sys
    from reference_models import registry
    registry._MODULES["recurrent_toy"] = "tests.reference_models.inference.recurrent_toy"
    from reference_models.cli.run import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _frames_folder(folder: Path, count: int, size: int = 16) -> Path:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def _run_toy(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _RUN_TOY, *args], cwd=ROOT, env=env, text=True, **popen)


def test_run_writes_the_exact_whole_sequence_and_cleans_up(tmp_path):
    frames = _frames_folder(tmp_path / "in", 6, size=10)
    spill = tmp_path / "spill"
    spill.mkdir()
    common = [
        "recurrent_toy",
        "--random-weights",
        "--model-arg",
        "grid=False",
        "--device",
        "cpu",
        "--input",
        str(frames),
    ]
    process = _run_toy(
        [*common, "--output", str(tmp_path / "out"), "--max-memory", "1K", "--spill-dir", str(spill)],
        stderr=subprocess.PIPE,
    )
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "one sequence of 6 frames (exact)" in err and "sweep 2/2 forward" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"f{i}.png" for i in range(6)]
    assert not list(spill.iterdir())
    process = _run_toy([*common, "--output", str(tmp_path / "seg"), "--max-seq-len", "3"], stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0 and "approximate" in err, err
    process = _run_toy([*common, "--output", str(tmp_path / "tiled"), "--tile", "16"], stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and err.strip().splitlines()[-1].startswith("error: --tile: a recurrent model"), err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_no_spill_files_and_no_output(tmp_path, signum):
    frames = _frames_folder(tmp_path / "in", 400)
    spill = tmp_path / "spill"
    spill.mkdir()
    out = tmp_path / "out"
    process = _run_toy(
        [
            "recurrent_toy",
            "--random-weights",
            "--device",
            "cpu",
            "--input",
            str(frames),
            "--output",
            str(out),
            "--max-memory",
            "1K",
            "--spill-dir",
            str(spill),
        ],
        stderr=subprocess.PIPE,
    )
    seen = ""
    while "sweep 1/4" not in seen:  # the first sweep has started: features are spilling
        line = process.stderr.read(1)
        assert line, seen
        seen += line
    assert list(spill.iterdir())
    process.send_signal(signum)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, seen + err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert not list(spill.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "spill"]  # no output, no partial


def test_run_on_a_video_decodes_once_into_the_store_and_matches_the_forward(tmp_path, monkeypatch):
    pytest.importorskip("av")
    from PIL import Image

    from reference_models import registry
    from reference_models.cli.run import main
    from reference_models.io.video import open_frames
    from tests.reference_models.cli.test_run_video import write_clip

    monkeypatch.setitem(registry._MODULES, "recurrent_toy", "tests.reference_models.inference.recurrent_toy")
    video = write_clip(tmp_path / "in.mkv", frames=6)
    spill = tmp_path / "spill"
    spill.mkdir()
    torch.manual_seed(5)
    status = main(
        [
            "recurrent_toy",
            "--random-weights",
            "--device",
            "cpu",
            "--quiet",
            "-i",
            str(video),
            "-o",
            str(tmp_path / "out"),
            "--max-memory",
            "1K",
            "--spill-dir",
            str(spill),
        ]
    )
    assert status == 0 and not list(spill.iterdir())
    torch.manual_seed(5)
    model = create_model("recurrent_toy", "paper").eval()
    clip = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in open_frames(video)]).float() / 255
    with torch.no_grad():
        want = model(clip[None])[0].clamp(0, 1).mul(255).round()
    got = torch.stack(
        [torch.from_numpy(np.array(Image.open(tmp_path / "out" / f"{i:08d}.png"))).permute(2, 0, 1) for i in range(6)]
    ).float()
    assert (got - want).abs().max() <= 1  # a value on a rounding boundary may land either side
