"""``run --precision``: the arithmetic it picks, what it says, and the deprecated ``--dtype``."""

import numpy as np
from PIL import Image

from tests.reference_models.cli.test_cli import assert_one_line_error, expected_frames, run_cli
from tests.reference_models.conftest import play_cpu
from tests.reference_models.helpers import random_frames, write_folder


def run_folder(tmp_path, capsys, checkpoint, *options):
    frames = random_frames(3, 8, 8, seed=4)
    src = write_folder(tmp_path / "in", frames)
    code, _, err = run_cli(
        capsys, "run", "--checkpoint", checkpoint, "-i", src, "-o", tmp_path / "out", "--device", "cpu", *options
    )
    written = [np.array(Image.open(tmp_path / "out" / f"frame{k + 1}.png")) for k in range(3)] if code == 0 else []
    return code, err, frames, written


def test_auto_says_float32_on_a_cpu_without_bfloat16(tmp_path, capsys, checkpoint):
    code, err, frames, written = run_folder(tmp_path, capsys, checkpoint)
    assert code == 0, err
    assert "precision: float32 (auto: the CPU has neither amx_bf16 nor avx512_bf16" in err
    for got, exp in zip(written, expected_frames(checkpoint, frames)):
        np.testing.assert_array_equal(got, exp)


def test_auto_says_bfloat16_where_the_cpu_has_it(tmp_path, capsys, checkpoint, monkeypatch):
    play_cpu(monkeypatch, "avx2 avx512f avx512_bf16")
    code, err, frames, written = run_folder(tmp_path, capsys, checkpoint)
    assert code == 0, err
    assert "precision: bfloat16 (auto: the CPU multiplies bfloat16 in hardware, avx512_bf16)" in err
    for got, exp in zip(written, expected_frames(checkpoint, frames)):
        assert np.abs(got.astype(np.int16) - exp).max() <= 2  # the residual's rounding, a level or two at most


def test_precision_bfloat16_is_said_to_be_asked_for(tmp_path, capsys, checkpoint):
    code, err, _, written = run_folder(tmp_path, capsys, checkpoint, "--precision", "bfloat16")
    assert code == 0, err
    assert "precision: bfloat16 (asked for)" in err and len(written) == 3


def test_dtype_and_precision_together_is_one_error(tmp_path, capsys, checkpoint):
    code, err, _, _ = run_folder(tmp_path, capsys, checkpoint, "--precision", "bfloat16", "--dtype", "bfloat16")
    assert_one_line_error(code, err, "give --precision or the deprecated --dtype, not both")


def test_deprecated_dtype_warns_and_casts_the_model(tmp_path, capsys, checkpoint):
    code, err, _, written = run_folder(tmp_path, capsys, checkpoint, "--dtype", "bfloat16")
    assert code == 0, err
    assert "warning: --dtype is deprecated" in err
    assert "precision: bfloat16 (the model's own dtype)" in err and len(written) == 3
