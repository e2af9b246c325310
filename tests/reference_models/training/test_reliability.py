"""Issue 14's training items: seeded runs repeat, non-finite losses stop or skip, a longer resumed run
extends its schedule smoothly, interrupted saves leave nothing behind, bad options are one error line,
``--help`` does not need torch."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import Dataset

from reference_models.cli.train import main as train_main
from reference_models.training import (
    ConstantSchedule,
    CosineRestartSchedule,
    ManaThreeStageSchedule,
    NonFiniteLossError,
    TrainClips,
    Trainer,
    extend_schedule,
    make_schedule,
)
from tests.reference_models.training.tiny import REPO, TinyVSR, clip_folder, config, photo_clip, python_env, run_python


def _losses(folder):
    return [float(r["loss"]) for r in csv.DictReader(open(folder / "log.csv"))]


def test_same_seed_same_run_from_the_command_line(tmp_path, capsys):
    """The initial weights follow --seed too (the model used to be built before the seed was applied)."""
    data = clip_folder(tmp_path / "data", clips=1, t=3)
    common = [
        "mana",
        "--data",
        str(data),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--patch-size",
        "6",
        "--quiet",
        "--device",
        "cpu",
        "--log-every",
        "1",
    ]
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert train_main([*common, "--seed", seed, "--output", str(tmp_path / name)]) == 0
    a, b, c = (_losses(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c
    wa, wb = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _PoisonedClips(Dataset):
    """Items of a tiny clip, with NaN frames at the ``poisoned`` indices (a NaN loss at those steps)."""

    def __init__(self, poisoned: set[int]) -> None:
        self.data, self.poisoned = TrainClips([photo_clip()], num_frames=3, patch_size=6, augment=False), poisoned

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.data[index]
        if index in self.poisoned:
            item = {"lr": torch.full_like(item["lr"], math.nan), "hr": item["hr"]}
        return item


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(
        TinyVSR(), _PoisonedClips({4}), config(tmp_path, steps=8, batch_size=1, lr=1e-3, checkpoint_every=2)
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"step 4: the loss is nan; training stopped and .*last.pt \(step 4\) is the last good checkpoint",
    ):
        trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["training"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad step changed nothing
    rows = json.loads((tmp_path / "log.json").read_text())["rows"]
    assert len(rows) == 5 and math.isnan(rows[-1]["loss"])


def test_nonfinite_loss_skips_the_step_when_asked(tmp_path, capsys):
    torch.manual_seed(0)
    trainer = Trainer(
        TinyVSR(), _PoisonedClips({1, 3}), config(tmp_path, steps=5, batch_size=1, lr=1e-3, on_nonfinite="skip")
    )
    before = None

    def weights():
        return [p.detach().clone() for p in trainer.model.parameters()]

    trainer.fit(until=3)
    before = weights()
    trainer.fit(until=4)  # step 3 is poisoned: skipped, no weight moves
    assert all(torch.equal(p, q) for p, q in zip(before, weights()))
    trainer.fit()
    assert trainer.skipped_steps == 2 and trainer.step == 5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert "step 1: non-finite loss or gradient; step skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "log.json").read_text())["skipped_steps"] == 2


def test_cli_nonfinite_loss_is_one_error_line(tmp_path, capsys):
    data = clip_folder(tmp_path / "data", clips=1, t=3)
    argv = [
        "mana",
        "--data",
        str(data),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--patch-size",
        "6",
        "--lr",
        "1e30",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert train_main([*argv, "--output", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: step ") and "--on-nonfinite skip" in err[0]


def test_extended_cosine_is_continuous_and_reaches_eta_min():
    """The issue: resuming a 100-step cosine at step 96 with --steps 200 jumped the rate 35x."""
    old = CosineRestartSchedule(100, lr=2.5e-5, eta_min=1e-7)
    new = extend_schedule(old, 96, 200)
    assert [new.lr(k) for k in range(96)] == [old.lr(k) for k in range(96)]
    assert new.lr(96) == old.lr(96)
    rates = [new.lr(k) for k in range(96, 201)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert max(abs(a - b) for a, b in zip(rates, rates[1:])) <= abs(
        old.lr(95) - old.lr(96)
    )  # no step larger than the old schedule's
    assert new.lr(200) == pytest.approx(1e-7)
    assert make_schedule(**new.state_dict()).state_dict() == new.state_dict()
    assert extend_schedule(extend_schedule(old, 50, 150), 120, 300).lr(120) == extend_schedule(old, 50, 150).lr(120)
    assert extend_schedule(ConstantSchedule(10, 1e-4), 5, 20).lr(19) == 1e-4
    assert extend_schedule(old, 10, 100) is old
    with pytest.raises(ValueError, match="mana-3stage cannot change --steps"):
        extend_schedule(ManaThreeStageSchedule(150), 10, 300)
    with pytest.raises(ValueError, match="must be larger"):
        extend_schedule(old, 50, 50)


def _run(tmp_path, steps, until=None, resume=None):
    torch.manual_seed(0)
    data = TrainClips([photo_clip(0), photo_clip(1)], num_frames=3, patch_size=6, seed=5)
    trainer = Trainer(TinyVSR(), data, config(tmp_path, steps=steps, batch_size=2, lr=1e-2, eta_min=0.0))
    if resume:
        trainer.load_checkpoint(resume)
    trainer.fit(until)
    return trainer


def test_resumed_run_with_more_steps_extends_the_schedule_and_stays_exact(tmp_path):
    """6 planned steps, stopped at 4, resumed with --steps 10: the rate goes on from where it was; resuming
    that extended run again (at 7) gives bit-exactly the same run as not stopping it."""
    base = _run(tmp_path / "a", 6, until=4)
    ckpt = tmp_path / "a" / "last.pt"
    whole = _run(tmp_path / "b", 10, resume=ckpt)
    assert whole.schedule.name == "extended"
    rates = [r.lr for r in whole.rows]
    assert rates[:4] == [r.lr for r in base.rows]
    assert rates[4] == CosineRestartSchedule(6, lr=1e-2, eta_min=0.0).lr(4)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    _run(tmp_path / "a", 10, until=7, resume=ckpt)
    again = _run(tmp_path / "a", 10, resume=ckpt)
    assert [r.loss for r in again.rows] == [r.loss for r in whole.rows]
    assert [r.lr for r in again.rows] == rates


def test_stale_partials_are_removed_and_others_kept(tmp_path):
    for name in (".last.pt.partial-abc123", ".best.pt.partial-x", ".notes.txt.partial-1"):
        (tmp_path / name).write_bytes(b"half a checkpoint")
    data = TrainClips([photo_clip()], num_frames=3, patch_size=6)
    Trainer(TinyVSR(), data, config(tmp_path, steps=1, batch_size=1)).fit()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".notes.txt.partial-1"]


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, so that Python turns it into KeyboardInterrupt. A test run
    started as a background job (``cmd &`` without job control) ignores SIGINT, and the child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_training_exits_cleanly(tmp_path, sig, status):
    """A real signal to a training subprocess that saves every step: the right status, one error line,
    and no temporary checkpoint left (the last complete last.pt stays)."""
    data = clip_folder(tmp_path / "data", clips=1, t=3)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "reference_models",
        "train",
        "mana",
        "--data",
        str(data),
        "--steps",
        "100000",
        "--batch-size",
        "1",
    ]
    argv += ["--patch-size", "6", "--checkpoint-every", "1", "--quiet", "--device", "cpu", "--output", str(out)]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)  # well inside the run of saves
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--resume" in lines[0], err
    assert not [p.name for p in out.iterdir() if ".partial-" in p.name]
    assert torch.load(out / "last.pt", weights_only=True)["training"]["step"] >= 1


@pytest.mark.parametrize("size", ["0", "-3"])
def test_patch_size_must_be_positive(tmp_path, capsys, size):
    data = clip_folder(tmp_path / "data", clips=1, t=3)
    assert (
        train_main(["mana", "--data", str(data), "--patch-size", size, "--output", str(tmp_path / "run"), "--quiet"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --patch-size must be >= 1 (LR pixels), got {size}"]
    assert not (tmp_path / "run").exists()


def test_train_help_imports_no_training_code():
    """--help parses before anything heavy is imported: not the trainer, the datasets, TensorBoard, and no
    torch beyond what ``import reference_models`` itself loads."""
    code = (
        "import sys\n"
        "import reference_models\n"
        "base = set(sys.modules)\n"
        "from reference_models.cli.train import build_parser\n"
        "try:\n"
        "    build_parser().parse_args(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['reference_models.training.trainer', 'reference_models.data.dataset', 'reference_models.data.degradation', 'torch.utils.tensorboard']\n"
        "print('LOADED', [m for m in heavy if m in sys.modules], 'torch' in base or 'torch' not in sys.modules)\n"
    )
    result = run_python(["-c", code], timeout=120)
    assert "usage: python -m reference_models train" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "LOADED [] True", result.stdout + result.stderr
