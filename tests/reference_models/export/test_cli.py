"""``python -m reference_models export`` and ``run --backend onnxruntime``."""

import numpy as np
import pytest
import torch
from PIL import Image

from reference_models import create_model, save_checkpoint
from reference_models.cli import main
from reference_models.export.torchscript import load_torchscript
from tests.reference_models.helpers import random_frames, write_folder


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(code, err, message):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mana_tiny.pt"
    save_checkpoint(create_model("mana", "tiny"), path)
    return path


def test_export_torchscript_from_checkpoint_alone(tmp_path, capsys, checkpoint):
    out = tmp_path / "mana.ts"
    code, err = run_cli(
        capsys,
        "export",
        "--checkpoint",
        checkpoint,
        "--format",
        "torchscript",
        "-o",
        out,
        "--height",
        "12",
        "--width",
        "16",
    )
    assert code == 0, err
    assert "H: 12, W: 16" in err
    _, metadata = load_torchscript(out)
    assert (metadata["model"], metadata["preset"], metadata["num_frames"]) == ("mana", "tiny", "7")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--format", "onnx", "-o", "{tmp}/m.onnx"], "name the model"),
        (
            ["export", "mana", "--preset", "tiny", "--format", "torchscript", "-o", "{tmp}/m.ts", "--opset", "17"],
            "--opset",
        ),
        (["export", "mana", "--preset", "nope", "--format", "onnx", "-o", "{tmp}/m.onnx"], "unknown preset"),
        (["export", "mana", "--preset", "tiny", "--format", "onnx", "-o", "{tmp}/missing/m.onnx"], "does not exist"),
        (["run", "--backend", "onnxruntime", "-i", "{tmp}", "-o", "{tmp}/out"], "needs --model FILE.onnx"),
        (["run", "--model", "{tmp}/none.onnx", "-i", "{tmp}", "-o", "{tmp}/out"], "does not exist"),
        (["run", "mana", "--model", "{tmp}/none.onnx", "-i", "{tmp}", "-o", "{tmp}/out"], "leave out the model name"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, argv, message):
    write_folder(tmp_path, random_frames(1, 8, 8), ["a.png"])
    code, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert_one_line_error(code, err, message)


@pytest.mark.slow
def test_run_onnxruntime_backend_matches_pytorch(tmp_path, capsys, checkpoint):
    onnx_file = tmp_path / "mana.onnx"
    code, err = run_cli(capsys, "export", "--checkpoint", checkpoint, "--format", "onnx", "-o", onnx_file, "-q")
    assert code == 0, err
    src = write_folder(tmp_path / "in", random_frames(4, 10, 14), [f"f{i}.png" for i in range(4)])
    code, err = run_cli(
        capsys, "run", "--backend", "onnxruntime", "--model", onnx_file, "-i", src, "-o", tmp_path / "ort", "-q"
    )
    assert code == 0, err
    code, err = run_cli(
        capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "torch", "--device=cpu", "-q"
    )
    assert code == 0, err
    for i in range(4):
        ort = np.asarray(Image.open(tmp_path / "ort" / f"f{i}.png"), dtype=np.int16)
        eager = np.asarray(Image.open(tmp_path / "torch" / f"f{i}.png"), dtype=np.int16)
        assert ort.shape == (40, 56, 3)
        assert np.abs(ort - eager).max() <= 1  # float differences of ~1e-6 may flip a rounding
