"""``python -m reference_models evaluate``: the protocol against a direct computation, the JSON schema, errors."""

import json

import numpy as np
import pytest
import torch

from reference_models.cli import main as cli_main
from reference_models.data import bicubic_upsample, degrade, vid4
from reference_models.evaluation.protocol import bicubic_upscaler, evaluate_dataset, to_uint8
from tests.reference_models.data.test_layouts import write_clip, write_vid4, write_vimeo
from vsrblocks import psnr, ssim

KEYS = {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}


def _direct_bicubic_scores(lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> dict[str, float]:
    """Bicubic of one 8-bit LR frame, rounded to 8 bits, scored with vsrblocks.psnr/ssim on [0, 1] values."""
    sr = (bicubic_upsample(lr_u8.double() / 255).clamp(0, 1) * 255).round() / 255
    hr = hr_u8.double() / 255
    x, y = sr[None], hr[None]
    return {
        "psnr_y": psnr(x, y, test_y_channel=True).item(),
        "ssim_y": ssim(x, y, test_y_channel=True).item(),
        "psnr_rgb": psnr(x, y).item(),
        "ssim_rgb": ssim(x, y).item(),
    }


@pytest.mark.parametrize("provided_lr", [True, False])
def test_evaluate_bicubic_equals_a_direct_computation(tmp_path, capsys, provided_lr):
    root = write_vid4(tmp_path / "vid4", clips=("calendar", "city"), frames=3, lr="BIx4" if provided_lr else None)
    out = tmp_path / "scores.json"
    status = cli_main(
        ["evaluate", "bicubic", "--dataset", "vid4", "--root", str(root), "--output-json", str(out), "-q"]
    )
    assert status == 0
    result = json.loads(out.read_text())
    data = vid4(root)
    per_clip = {}
    for k, hr_clip in enumerate(data.hr):
        frames = []
        for i in range(len(hr_clip)):
            hr = hr_clip[i]
            lr = data.lr[k][i] if provided_lr else to_uint8(degrade(hr.double() / 255, 4, "bicubic"))
            frames.append(_direct_bicubic_scores(lr, hr))
        per_clip[hr_clip.name] = {m: np.mean([f[m] for f in frames]) for m in KEYS}
    for name, scores in per_clip.items():
        for m in KEYS:
            assert result["clips"][name][m] == pytest.approx(scores[m], abs=1e-9)
        assert result["clips"][name]["frames"] == 3
    for m in KEYS:
        assert result["mean"][m] == pytest.approx(np.mean([s[m] for s in per_clip.values()]), abs=1e-9)
    captured = capsys.readouterr()
    assert "| **mean over clips** | 6 |" in captured.out and "| calendar | 3 |" in captured.out
    assert ("provided" if provided_lr else "generated from the HR frames with BI") in captured.err


def test_json_schema_and_mean_over_clips(tmp_path):
    """The dataset mean is the mean of the clip means, not of all frames (clips of 2 and 4 frames)."""
    write_clip(tmp_path / "GT" / "short", 2, 16, 16, seed=1)
    write_clip(tmp_path / "GT" / "long", 4, 16, 16, seed=2)
    result = evaluate_dataset(vid4(tmp_path, "bd"), bicubic_upscaler(), "bicubic", degradation="bd", progress=False)
    assert set(result) == {"dataset", "model", "degradation", "clips", "mean"}
    assert (result["dataset"], result["model"], result["degradation"]) == ("vid4", "bicubic", "bd")
    assert set(result["clips"]) == {"short", "long"}
    for scores in result["clips"].values():
        assert set(scores) == KEYS | {"frames"}
    assert set(result["mean"]) == KEYS
    assert [result["clips"][c]["frames"] for c in ("long", "short")] == [4, 2]
    assert result["mean"]["psnr_y"] == pytest.approx(
        (result["clips"]["short"]["psnr_y"] + result["clips"]["long"]["psnr_y"]) / 2
    )
    json.dumps(result)


def test_vimeo90k_t_scores_the_centre_frame_unless_all_frames(tmp_path):
    data_root = write_vimeo(tmp_path)
    seen = []

    def upscaler(frames):
        for frame in frames:
            seen.append(frame)
            yield bicubic_upsample(frame.double() / 255)

    from reference_models.data import vimeo90k

    data = vimeo90k(data_root)
    centre = evaluate_dataset(data, upscaler, "bicubic", progress=False)
    assert [c["frames"] for c in centre["clips"].values()] == [1, 1] and len(seen) == 14
    lr, hr = data.lr[0][3], data.hr[0][3]
    assert centre["clips"]["00001/0001"]["psnr_y"] == pytest.approx(_direct_bicubic_scores(lr, hr)["psnr_y"], abs=1e-9)
    every = evaluate_dataset(data, bicubic_upscaler(), "bicubic", all_frames=True, progress=False)
    assert [c["frames"] for c in every["clips"].values()] == [7, 7]


def test_evaluate_a_model_and_save_frames(tmp_path, capsys):
    root = write_vid4(tmp_path / "vid4", clips=("a",), frames=3)
    frames_dir = tmp_path / "sr"
    status = cli_main(
        [
            "evaluate",
            "mana",
            "--preset",
            "tiny",
            "--dataset",
            "vid4",
            "--root",
            str(root),
            "--device",
            "cpu",
            "--save-frames",
            str(frames_dir),
            "--crop-border",
            "2",
            "-q",
            "--random-weights",
        ]
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "mana (tiny)" in captured.out and "random weights" in captured.err
    assert sorted(p.name for p in (frames_dir / "a").iterdir()) == ["001.png", "002.png", "003.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["bicubic", "--dataset", "reds4"], "train_sharp' is missing"),
        (["bicubic", "--dataset", "vid4", "--crop-border", "-1"], "--crop-border must be >= 0"),
        (["bicubic", "--dataset", "vid4", "--checkpoint", "x.pt"], "takes no --checkpoint"),
        (["--dataset", "vid4"], "name a model"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, extra, message):
    root = write_vid4(tmp_path / "vid4", clips=("a",), frames=2)
    assert cli_main(["evaluate", *extra, "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_inconsistent_dataset_is_one_line(tmp_path, capsys):
    root = write_vid4(tmp_path / "vid4", clips=("a",), frames=3)
    (root / "BIx4" / "a" / "002.png").unlink()
    assert cli_main(["evaluate", "bicubic", "--dataset", "vid4", "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip 'a': 3 GT frames" in err[0] and "2 LR frames" in err[0]
