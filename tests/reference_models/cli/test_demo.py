"""The demo end to end: built-in clips, a short CPU training run, a model that beats bicubic, the files it writes."""

from __future__ import annotations

import torch

from reference_models.cli.demo import DemoSettings, demo_clips, load_photo, main, pan_zoom_clip, run_demo
from reference_models.training import TensorClip


def test_photos_ship_with_scikit_image_and_clips_move():
    photo = load_photo("chelsea")
    assert photo.shape == (3, 300, 451) and 0 <= photo.min() and photo.max() <= 1
    clip = pan_zoom_clip(photo, frames=5, size=(32, 48), seed=1)
    assert clip.shape == (5, 3, 32, 48)
    assert all((clip[k + 1] - clip[k]).abs().mean() > 1e-3 for k in range(4))  # the camera moves
    torch.testing.assert_close(clip, pan_zoom_clip(photo, frames=5, size=(32, 48), seed=1), atol=0, rtol=0)


def test_demo_end_to_end_beats_bicubic(tmp_path, monkeypatch, capsys):
    """A shorter run on smaller clips: the tiny MANA beats bicubic on the held-out photo's frames (by 1.05 dB after
    these 100 steps, measured; 1.42 dB after 150)."""
    monkeypatch.chdir(tmp_path)
    settings = DemoSettings(
        steps=100, batch_size=8, patch_size=12, frames=30, held_out=9, size=(64, 96), progress=False
    )
    summary = run_demo(settings)
    printed = capsys.readouterr().out
    gain = summary["model"]["psnr_y"] - summary["bicubic"]["psnr_y"]
    print(printed)
    assert gain > 0, f"model {summary['model']['psnr_y']:.2f} dB vs bicubic {summary['bicubic']['psnr_y']:.2f} dB"
    out = tmp_path / "demo_out"
    assert len(list((out / "sr").glob("*.png"))) == 3
    assert {"side_by_side.png", "metrics.md", "model.pt"} <= {p.name for p in out.iterdir()}
    assert (out / "train" / "curve.png").exists() and (out / "train" / "log.csv").exists()
    assert "| bicubic |" in printed and "gain over bicubic" in printed and "beats bicubic" in printed
    assert "train/ (log.csv, curve.png)" in printed


def test_demo_lists_only_what_it_wrote(tmp_path):
    from reference_models.cli.demo import _written

    (tmp_path / "sr").mkdir()
    (tmp_path / "train").mkdir()
    for name in ("side_by_side.png", "metrics.md", "train/log.csv"):
        (tmp_path / name).write_text("x")
    assert _written(tmp_path, 3) == ["sr/ (3 frames)", "side_by_side.png", "metrics.md", "train/ (log.csv)"]


def test_demo_command_writes_to_the_output_folder(tmp_path, monkeypatch):
    """``demo --output DIR`` from another working directory; the exit status says whether bicubic was beaten."""
    monkeypatch.chdir(tmp_path)
    status = main(["--steps", "2", "--quiet", "--output", str(tmp_path / "elsewhere")])
    assert status in (0, 1)
    assert (tmp_path / "elsewhere" / "metrics.md").exists() and (tmp_path / "elsewhere" / "side_by_side.png").exists()
    assert not (tmp_path / "demo_out").exists()
    from reference_models.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(tmp_path / "elsewhere" / "model.pt")
    assert model.model_spec["name"] == "mana"


def test_demo_clip_is_split_in_time():
    train, held = demo_clips(frames=10, held_out=4, size=(32, 48))
    assert (len(train), len(held)) == (6, 4)
    whole = pan_zoom_clip(load_photo("chelsea"), 10, (32, 48))
    torch.testing.assert_close(held.frames(range(4)), TensorClip(whole[6:]).frames(range(4)), atol=0, rtol=0)


def test_demo_bad_options_exit_with_one_line_and_write_nothing(tmp_path, capsys):
    for argv, message in [
        (["--photo", "no_such_photo"], "ships no image 'no_such_photo'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
    ]:
        assert main([*argv, "--steps", "1", "--quiet", "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
        assert not (tmp_path / "out").exists()
