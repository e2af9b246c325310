import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reference_models
from reference_models.checkpoint import model_from_checkpoint, save_checkpoint
from reference_models.cli import main
from reference_models.inference.upscale import upscale_clip
from tests.reference_models.helpers import random_frames, write_folder, write_video

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny MANA checkpoint (with model_spec) and its model."""
    torch.manual_seed(0)
    try:
        model = reference_models.create_model("mana", "tiny")
    except ImportError:
        pytest.skip("mana is not written yet")
    path = tmp_path_factory.mktemp("ckpt") / "mana_tiny.pt"
    save_checkpoint(model, path)
    return path


def expected_frames(checkpoint, frames):
    model = model_from_checkpoint(checkpoint).eval()
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    out = upscale_clip(model, clip)
    return [f.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy() for f in out]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, message):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


def test_folder_to_folder_with_checkpoint_alone(tmp_path, capsys, checkpoint):
    frames = random_frames(5, 12, 16)
    names = ["b_2.jpg", "b_10.png", "b_1.png", "b_3.bmp", "b_20.png"]
    src = write_folder(tmp_path / "in", frames[:1] + frames[1:], names)
    stored = [np.array(Image.open(src / n)) for n in ["b_1.png", "b_2.jpg", "b_3.bmp", "b_10.png", "b_20.png"]]
    code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "out", "--device=cpu")
    assert code == 0, err
    assert "frames/s" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["b_1.png", "b_10.png", "b_2.png", "b_20.png", "b_3.png"]
    expected = expected_frames(checkpoint, stored)
    for name, exp in zip(["b_1", "b_2", "b_3", "b_10", "b_20"], expected):
        got = np.array(Image.open(tmp_path / "out" / f"{name}.png"))
        assert got.shape == (48, 64, 3)
        np.testing.assert_array_equal(got, exp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_video_to_folder_and_folder_to_video(tmp_path, capsys, checkpoint):
    frames = random_frames(4, 8, 20, seed=1)
    video = write_video(tmp_path / "clip.mkv", frames)
    code, _, err = run_cli(capsys, "run", "mana", "--checkpoint", checkpoint, "-i", video, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert err == ""
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{i:08d}.png" for i in range(4)]
    expected = expected_frames(checkpoint, frames)
    for name, exp in zip(names, expected):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out" / name)), exp)

    tiling = ["--tile", "16", "--tile-overlap", "4"]
    sr_video = tmp_path / "sr.mp4"
    code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", video, "-o", sr_video, "-q", *tiling)
    assert code == 0, err
    import av

    with av.open(str(tmp_path / "sr.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (32, 80, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", reference_models.list_models())
def test_every_tiny_model_runs_end_to_end(tmp_path, capsys, name):
    try:
        reference_models.create_model(name, "tiny")
    except ImportError:
        pytest.skip(f"{name} is not written yet")
    src = write_folder(tmp_path / "in", random_frames(3, 8, 12))
    argv = [
        "run",
        name,
        "--preset",
        "tiny",
        "-i",
        src,
        "-o",
        tmp_path / "out",
        "-q",
        "--batch",
        "2",
        "--random-weights",
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert err.strip() == "warning: --random-weights: the model runs with random weights"
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == ["frame1.png", "frame2.png", "frame3.png"]
    assert all(Image.open(p).size == (48, 32) for p in outputs)


def test_greyscale_and_rgba_frames_are_converted_with_a_warning(tmp_path, capsys, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8), mode="L").save(src / "0.png")
    Image.fromarray(np.full((8, 8, 4), 100, np.uint8), mode="RGBA").save(src / "1.png")
    code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert "greyscale frames are converted to RGB" in err and "alpha channel is dropped" in err
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_checkpoint_alone_rebuilds_overrides(tmp_path, capsys):
    """A checkpoint of a model built with overrides (here 3 input frames instead of the preset's) runs with
    ``--checkpoint`` alone, as that model: the outputs equal the saved model's own."""
    torch.manual_seed(1)
    model = reference_models.create_model("mana", "tiny", num_frames=3)
    path = tmp_path / "mana3.pt"
    save_checkpoint(model, path)
    frames = random_frames(4, 8, 8, seed=2)
    src = write_folder(tmp_path / "in", frames)
    code, _, err = run_cli(capsys, "run", "--checkpoint", path, "-i", src, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    expected = upscale_clip(model.eval(), clip).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for k in range(4):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out" / f"frame{k + 1}.png")), expected[k])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_option_runs_in_reduced_precision(tmp_path, capsys, checkpoint, dtype):
    frames = random_frames(3, 8, 8, seed=4)
    src = write_folder(tmp_path / "in", frames)
    code, _, err = run_cli(
        capsys,
        "run",
        "--checkpoint",
        checkpoint,
        "-i",
        src,
        "-o",
        tmp_path / "out",
        "-q",
        "--dtype",
        dtype,
        "--device",
        "cpu",
    )
    assert code == 0, err
    expected = expected_frames(checkpoint, frames)
    for k, exp in enumerate(expected):
        got = np.array(Image.open(tmp_path / "out" / f"frame{k + 1}.png")).astype(np.int16)
        assert got.shape == exp.shape
        assert np.abs(got - exp).mean() < 3, np.abs(got - exp).mean()  # a few 8-bit levels of rounding


def test_existing_output_folder_keeps_other_files(tmp_path, capsys, checkpoint):
    src = write_folder(tmp_path / "in", random_frames(2, 8, 8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    (out / "frame1.png").write_text("old")
    code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", out, "-q")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["frame1.png", "frame2.png", "notes.txt"]
    assert Image.open(out / "frame1.png").size == (32, 32)


def _bad_inputs(tmp_path, checkpoint):
    good = write_folder(tmp_path / "good", random_frames(3, 8, 8))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames")
    corrupt_frame = write_folder(tmp_path / "corrupt_frame", random_frames(2, 8, 8))
    (corrupt_frame / "frame3.png").write_bytes(b"not a png")
    sizes = write_folder(tmp_path / "sizes", random_frames(2, 8, 8))
    Image.fromarray(random_frames(1, 8, 10)[0]).save(sizes / "frame3.png")
    corrupt_video = tmp_path / "corrupt.mp4"
    corrupt_video.write_bytes(b"\x00" * 2000)
    corrupt_ckpt = tmp_path / "corrupt.pt"
    corrupt_ckpt.write_bytes(b"garbage" * 100)
    try:
        other = tmp_path / "dasaa.pt"
        save_checkpoint(reference_models.create_model("dasaa", "tiny"), other)
    except ImportError:
        other = None
    plain = tmp_path / "plain.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}}, plain)
    out = tmp_path / "out"
    cases = [
        (["mana", "--preset", "tiny", "-i", tmp_path / "missing", "-o", out], "does not exist"),
        (["mana", "--preset", "tiny", "-i", empty, "-o", out], "no frames in folder"),
        (["mana", "--preset", "tiny", "-i", corrupt_frame, "-o", out], "cannot read frame"),
        (["mana", "--preset", "tiny", "-i", sizes, "-o", out], "all frames of a clip must have the same size"),
        (["mana", "--preset", "tiny", "-i", corrupt_video, "-o", out], "cannot read video"),
        (["mana", "--preset", "tiny", "-i", good / "frame1.png", "-o", out], "single image"),
        (["--checkpoint", tmp_path / "nope.pt", "-i", good, "-o", out], "does not exist"),
        (["--checkpoint", corrupt_ckpt, "-i", good, "-o", out], "cannot read checkpoint"),
        (["mana", "--preset", "tiny", "--checkpoint", corrupt_ckpt, "-i", good, "-o", out], "cannot read checkpoint"),
        (["mana", "--preset", "tiny", "--checkpoint", plain, "-i", good, "-o", out], "does not fit MANA"),
        (["vsrt", "--checkpoint", checkpoint, "-i", good, "-o", out], "holds a mana model, not vsrt"),
        (["--checkpoint", checkpoint, "--preset", "paper", "-i", good, "-o", out], "holds preset 'tiny'"),
        (["--checkpoint", plain, "-i", good, "-o", out], "name the model"),
        (["-i", good, "-o", out], "name the model"),
        (["nosuchmodel", "-i", good, "-o", out], "unknown model 'nosuchmodel'"),
        (["mana", "--preset", "huge", "--random-weights", "-i", good, "-o", out], "unknown preset 'huge'"),
        (["mana", "--preset", "tiny", "-i", good, "-o", out], "no --checkpoint"),
        (["mana", "--preset", "tiny", "--tile", "16", "--tile-overlap", "9", "-i", good, "-o", out], "--tile-overlap"),
        (["mana", "--preset", "tiny", "--batch", "0", "-i", good, "-o", out], "--batch"),
        (["mana", "--preset", "tiny", "--tile", "0", "-i", good, "-o", out], "--tile must be >= 16"),
        (["mana", "--preset", "tiny", "--tile", "1", "-i", good, "-o", out], "--tile must be >= 16"),
        (["mana", "--preset", "tiny", "--fps", "0", "-i", good, "-o", tmp_path / "out.mp4"], "--fps must be between"),
        (["mana", "--preset", "tiny", "--fps", "inf", "-i", good, "-o", tmp_path / "out.mp4"], "--fps must be between"),
        (["mana", "--preset", "tiny", "--fps", "nan", "-i", good, "-o", tmp_path / "out.mp4"], "--fps must be between"),
        (
            ["mana", "--preset", "tiny", "--fps", "1e-9", "-i", good, "-o", tmp_path / "out.mp4"],
            "--fps must be between",
        ),
        (["--checkpoint", checkpoint, "--codec", "nosuchcodec", "-i", good, "-o", tmp_path / "o.mp4"], "no such video"),
        (["--checkpoint", checkpoint, "--codec", "aac", "-i", good, "-o", tmp_path / "o.mp4"], "not a video encoder"),
        (["--checkpoint", checkpoint, "--pix-fmt", "nv99", "-i", good, "-o", tmp_path / "o.mp4"], "--pix-fmt nv99"),
        (["--checkpoint", checkpoint, "--crf", "99", "-i", good, "-o", tmp_path / "o.mp4"], "--crf for libx264"),
        (["--checkpoint", checkpoint, "--resume", "-i", good, "-o", tmp_path / "o.mp4"], "--resume needs a folder"),
        (["--checkpoint", checkpoint, "--crf", "20", "-i", good, "-o", out], "--crf: for a video output"),
        (["--checkpoint", good, "-i", good, "-o", out], "is a folder"),
        (["mana", "--preset", "tiny", "-i", good, "-o", good], "must differ"),
    ]
    if other is not None:
        argv = ["mana", "--preset", "tiny", "--checkpoint", other, "-i", good, "-o", out]
        cases.append((argv, "holds a dasaa model, not mana"))
    return cases


def test_every_bad_input_exits_with_one_line_and_writes_nothing(tmp_path, capsys, checkpoint):
    for argv, message in _bad_inputs(tmp_path, checkpoint):
        before = sorted(p.name for p in tmp_path.iterdir())
        code, _, err = run_cli(capsys, "run", *argv, "-q")
        err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: "))
        assert_one_line_error(code, err, message)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv


def test_failure_half_way_leaves_no_output(tmp_path, capsys, checkpoint):
    """A frame whose header parses but whose data is truncated fails during the run, after frames were
    written: the partial output is removed, for folders and for videos."""
    src = write_folder(tmp_path / "in", random_frames(6, 16, 16, seed=3))
    data = (src / "frame5.png").read_bytes()
    (src / "frame5.png").write_bytes(data[: len(data) // 2])
    for out in (tmp_path / "out", tmp_path / "out.mp4"):
        code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", out, "-q")
        assert_one_line_error(code, err, "cannot read frame")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_no_arguments_prints_help_with_models(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 0
    assert "run" in out and "demo" in out and "train" in out
    assert ", ".join(reference_models.list_models()) in out


def test_list_prints_models_and_presets(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in reference_models.list_models():
        assert f"{name}: " in out
    assert "tiny" in out and "paper" in out


@pytest.mark.parametrize(
    "command, module", [("demo", "reference_models.cli.demo"), ("train", "reference_models.cli.train")]
)
def test_demo_and_train_are_delegated(monkeypatch, capsys, command, module):
    seen = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, module, fake)
    assert main([command, "--steps", "5"]) == 3
    assert seen == [["--steps", "5"]]
    monkeypatch.setitem(sys.modules, module, None)
    code, _, err = run_cli(capsys, command)
    assert code == 2 and err.startswith(f"error: '{command}' is not available") and len(err.strip().splitlines()) == 1


def test_python_dash_m_entry_point(tmp_path, checkpoint):
    """The real ``python -m reference_models`` process: success, and a failure with one line and no traceback."""
    src = write_folder(tmp_path / "in", random_frames(3, 8, 8))
    cli = [sys.executable, "-m", "reference_models", "run", "-i", str(src)]
    ok = subprocess.run(
        [*cli, "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out"), "-q", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3
    bad = subprocess.run(
        [*cli, "--checkpoint", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: checkpoint '{tmp_path / 'nope.pt'}' does not exist"]


def test_compile_option_runs_the_compiled_model(tmp_path, capsys, checkpoint, monkeypatch):
    """``run --compile`` goes through ``compile_model`` (here with Dynamo's eager backend: Inductor's C++ build
    takes minutes) and writes the frames the eager model writes."""
    import torch._dynamo.testing

    import reference_models.inference.compiled

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    original = reference_models.inference.compiled.compile_model
    monkeypatch.setattr(
        reference_models.inference.compiled, "compile_model", lambda model: original(model, backend=counter)
    )
    frames = random_frames(3, 12, 16)
    src = write_folder(tmp_path / "in", frames, [f"f{i}.png" for i in range(3)])
    code, _, err = run_cli(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "out", "--compile")
    assert code == 0, err
    assert "compiling" in err
    assert counter.frame_count >= 1
    for name, exp in zip([f"f{i}" for i in range(3)], expected_frames(checkpoint, frames)):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out" / f"{name}.png")), exp)


def test_compile_option_refuses_onnxruntime(tmp_path, capsys):
    src = write_folder(tmp_path / "in", random_frames(1, 8, 8), ["a.png"])
    code, _, err = run_cli(
        capsys,
        "run",
        "--backend",
        "onnxruntime",
        "--model",
        tmp_path / "m.onnx",
        "-i",
        src,
        "-o",
        tmp_path / "out",
        "--compile",
    )
    assert_one_line_error(code, err, "--compile")
