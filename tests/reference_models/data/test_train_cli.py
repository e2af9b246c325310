"""``train --dataset NAME --root DIR``: the layouts feed training, provided LR frames included."""

import pytest

from reference_models.cli.train import main as train_main
from tests.reference_models.data.test_layouts import write_clip


def test_train_on_vid4_layout_with_provided_lr(tmp_path, capsys):
    for name in ("a", "b"):
        write_clip(tmp_path / "vid4" / "GT" / name, 3, 32, 32)
        write_clip(tmp_path / "vid4" / "BIx4" / name, 3, 8, 8, seed=3)
    out = tmp_path / "run"
    args = [
        "mana",
        "--dataset",
        "vid4",
        "--root",
        str(tmp_path / "vid4"),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--patch-size",
        "4",
    ]
    args += [
        "--val-holdout",
        "1",
        "--val-every",
        "2",
        "--val-crop",
        "0",
        "--output",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert train_main(args) == 0
    captured = capsys.readouterr().out
    assert "LR frames: provided" in captured and "on 1 clip(s)" in captured and "PSNR-Y" in captured
    assert (out / "last.pt").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "vid4"], "--dataset NAME --root DIR"),
        (["--data", "x", "--dataset", "vid4", "--root", "x"], "--dataset NAME --root DIR"),
        ([], "--dataset NAME --root DIR"),
        (["--dataset", "reds", "--root", "{tmp}"], "train_sharp' is missing"),
    ],
)
def test_train_dataset_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert train_main(["mana", *argv, "--output", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
