"""``run`` never leaves half-written output, and every bad input or broken model is one ``error:`` line."""

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reference_models
from reference_models.checkpoint import save_checkpoint
from reference_models.cli import main
from reference_models.io.partial_output import NAME_MAX, create_partial_dir, partial_prefix, stale_partials
from tests.reference_models.helpers import random_frames, write_folder

ROOT = Path(__file__).resolve().parents[3]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def one_error_line(code, err, message):
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def chunk(kind, data):
    """One PNG chunk."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path, width, height):
    """An 8-bit RGB PNG whose header claims ``width x height`` (enough to trip Pillow's size check)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def png16_rgb(path, value):
    """A 4x4 16-bit RGB PNG filled with ``value``."""
    rows = b"".join(b"\x00" + np.full((4, 3), value, ">u2").tobytes() for _ in range(4))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def test_non_finite_weights_fail_naming_the_frame(tmp_path, capsys):
    model = reference_models.create_model("mana", "tiny")
    with torch.no_grad():
        model.conv_last.weight.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(model, path)
    src = write_folder(tmp_path / "in", random_frames(2, 8, 8))
    for out in (tmp_path / "out", tmp_path / "out.mp4"):
        code, err = run(capsys, "run", "--checkpoint", path, "-i", src, "-o", out, "-q")
        one_error_line(code, err, "the model's output for frame 'frame1.png' is not finite")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "nan.pt"]


def test_bad_files_and_outputs_are_one_line_and_change_nothing(tmp_path, capsys, checkpoint):
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    png_header_only(bomb / "f1.png", 20000, 20000)  # 400 M pixels
    good = write_folder(tmp_path / "good", random_frames(2, 8, 8))
    folder_mp4 = tmp_path / "taken.mp4"
    folder_mp4.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "frame1.png").write_text("old frame")
    (mixed / "frame2.png").mkdir()
    cases = [
        (bomb, tmp_path / "o1", "decompression bomb"),
        (good, folder_mp4, "is a folder"),
        (good, mixed, "a folder has that name"),
    ]
    for src, out, message in cases:
        before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", out, "-q")
        one_error_line(code, err, message)
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before, out
    assert (mixed / "frame1.png").read_text() == "old frame"


def test_sixteen_bit_inputs_are_converted_with_the_warning(tmp_path, capsys, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    png16_rgb(src / "a.png", 257 * 40)
    Image.fromarray(np.full((4, 4), 257 * 40, ">u2")).save(src / "b.tif")  # big-endian greyscale, "I;16B"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert err.count("16-bit frames are reduced to 8 bits") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_model_minimum_tile(tmp_path, capsys):
    model = reference_models.create_model("vsrt", "tiny", patch_size=32)
    path = tmp_path / "vsrt.pt"
    save_checkpoint(model, path)
    src = write_folder(tmp_path / "in", random_frames(3, 8, 40))
    code, err = run(capsys, "run", "--checkpoint", path, "-i", src, "-o", tmp_path / "out", "--tile", "16")
    one_error_line(code, err, "--tile must be >= 32 for VSRT")


def test_permissions_long_names_and_stale_partials(tmp_path, capsys, checkpoint):
    src = write_folder(tmp_path / "in", random_frames(2, 8, 8))
    old_umask = os.umask(0o022)
    try:
        folder = tmp_path / ("f" * 240)
        video = tmp_path / "clip.mp4"
        stale_dir = tmp_path / f"{partial_prefix(folder)}{dead_pid()}-0123abcd"
        stale_dir.mkdir()
        (stale_dir / "frame1.png").write_text("half")
        stale_video = tmp_path / f"{partial_prefix(video, '.mp4')}{dead_pid()}-0123abcd.mp4"
        stale_video.write_bytes(b"half")
        legacy = tmp_path / ".clip.partial-k2j_x9q1.mp4"  # from tempfile, before names carried a pid
        legacy.write_bytes(b"half")
        assert len(partial_prefix(folder).encode()) + 40 <= NAME_MAX
        for out in (folder, video):
            code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", out, "-q")
            assert code == 0, err
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", folder.name, video.name])
    assert folder.stat().st_mode & 0o777 == 0o755
    assert video.stat().st_mode & 0o777 == 0o644
    assert (folder / "frame1.png").stat().st_mode & 0o777 == 0o644


def test_a_running_writers_partial_is_not_stale(tmp_path):
    out = tmp_path / "out"
    mine = create_partial_dir(out)
    other = tmp_path / f"{partial_prefix(out)}{os.getppid()}-0123abcd"
    other.mkdir()
    gone = tmp_path / f"{partial_prefix(out)}{dead_pid()}-0123abcd"
    gone.mkdir()
    assert stale_partials(out) == [gone] and mine.exists()


def test_resume_skips_complete_frames_and_redoes_broken_ones(tmp_path, capsys, checkpoint):
    frames = random_frames(5, 8, 8, seed=5)
    src = write_folder(tmp_path / "in", frames)
    reference = tmp_path / "reference"
    assert run(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", reference, "-q")[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    marker = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(marker).save(out / "frame1.png")  # complete and the right size: kept as it is
    data = (reference / "frame2.png").read_bytes()
    (out / "frame2.png").write_bytes(data[: len(data) // 2])  # truncated: redone
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "frame3.png")  # wrong size: redone
    partial = tmp_path / f"{partial_prefix(out)}{dead_pid()}-0123abcd"  # an interrupted --resume run's frames
    partial.mkdir()
    Image.fromarray(marker + 7).save(partial / "frame4.png")
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", out, "--resume")
    assert code == 0, err
    assert "wrote 3 frames" in err and "kept 2 finished frames" in err
    np.testing.assert_array_equal(np.array(Image.open(out / "frame1.png")), marker)
    np.testing.assert_array_equal(np.array(Image.open(out / "frame4.png")), marker + 7)
    for name in ("frame2.png", "frame3.png", "frame5.png"):
        np.testing.assert_array_equal(np.array(Image.open(out / name)), np.array(Image.open(reference / name)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "reference"]


SLOW_RUN = """
import sys, time
import reference_models.inference.upscale as inference
original = inference.upscale_frames
def slow(*args, **kwargs):
    for out in original(*args, **kwargs):
        time.sleep(0.2)
        yield out
inference.upscale_frames = slow
from reference_models.cli import main
sys.exit(main(sys.argv[1:]))
"""


def interrupted_run(tmp_path, checkpoint, sig, *options):
    """Start a real (slowed) ``run`` of 20 frames into ``tmp_path / "out"`` and send ``sig`` once it has
    written a frame; returns its exit status, its stderr and its command-line arguments."""
    src = write_folder(tmp_path / "in", random_frames(20, 8, 8))
    # --precision pinned: the child does not see the tests' stand-in CPU (auto would pick bfloat16 on a CPU with
    # AVX-512 BF16, and the frames it leaves are compared with in-process float32 runs).
    argv = [
        "run",
        "--checkpoint",
        str(checkpoint),
        "--precision",
        "float32",
        "-i",
        str(src),
        "-o",
        str(tmp_path / "out"),
        "-q",
        *options,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        # Two files: the first frame is complete (the second is being written).
        while not any(p.name.startswith(".out.partial-") and len(list(p.iterdir())) > 1 for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it wrote a frame"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err, argv


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signals_leave_no_output(tmp_path, capsys, checkpoint, sig):
    """A real signal to a real run, once it is writing frames: SIGINT / SIGTERM remove the partial output and
    exit 130 / 143 with one line; after SIGKILL the next run into the same output removes the partial."""
    code, err, argv = interrupted_run(tmp_path, checkpoint, sig)
    assert not (tmp_path / "out").exists()
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert run(capsys, *argv)[0] == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
        return
    assert code == 128 + sig
    assert err.strip().splitlines() == [f"error: interrupted by {signal.Signals(sig).name}; nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_interrupted_resume_run_is_finished_by_the_next(tmp_path, capsys, checkpoint):
    code, err, argv = interrupted_run(tmp_path, checkpoint, signal.SIGTERM, "--resume")
    assert code == 143 and err.strip().splitlines() == [
        "error: interrupted by SIGTERM; frames finished so far are kept for the next --resume"
    ]
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    finished = len(list(partial.iterdir()))
    assert 0 < finished < 20 and not (tmp_path / "out").exists()
    code, err = run(capsys, *[a for a in argv if a != "-q"])
    assert code == 0, err
    assert f"wrote {20 - finished} frames" in err and f"kept {finished} finished frames" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    reference = tmp_path / "reference"
    assert run(capsys, *argv[:-4], "-o", reference, "-q")[0] == 0
    for frame in reference.iterdir():
        np.testing.assert_array_equal(np.array(Image.open(frame)), np.array(Image.open(tmp_path / "out" / frame.name)))


def test_help_and_list_do_not_import_torch():
    code = (
        "import sys\n"
        "from reference_models.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "main(['list'])\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch"
    assert "vsrt: paper, paper-reds, paper-vimeo, tiny" in done.stdout


def test_signals_wait_while_frames_move_into_place():
    from reference_models.io.partial_output import signals_deferred

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert seen == []
        time.sleep(0.05)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
