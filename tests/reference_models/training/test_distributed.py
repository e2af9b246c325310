"""Data-parallel training on torchrun: two gloo processes on CPU give the weights of one process with the
same global batch; each rank's share of the samples and of the validation clips."""

from __future__ import annotations

import json
import shutil
import sys

import torch
from hypothesis import given
from hypothesis import strategies as st

from reference_models.cli.train import main as train_main
from reference_models.training import TrainClips, Trainer, ValClips
from reference_models.training.trainer import _StepSampler
from tests.reference_models.training.tiny import TinyVSR, clip_folder, config, photo_clip, run_python


@given(start=st.integers(0, 20), steps=st.integers(1, 5), per_rank=st.integers(1, 4), world=st.integers(1, 4), length=st.integers(1, 50))
def test_ranks_share_each_global_batch(start, steps, per_rank, world, length):
    """Step k's samples are k * B ... k * B + B - 1 whatever the number of processes; rank r takes its slice."""
    batch = per_rank * world
    whole = list(_StepSampler(start, start + steps, batch, length))
    shares = [list(_StepSampler(start, start + steps, batch, length, rank, world)) for rank in range(world)]
    assert all(len(s) == steps * per_rank for s in shares)
    for k in range(steps):
        joined = [i for s in shares for i in s[k * per_rank : (k + 1) * per_rank]]
        assert joined == whole[k * batch : (k + 1) * batch] == [((start + k) * batch + j) % length for j in range(batch)]


def test_validation_shards_by_clip(tmp_path):
    val = ValClips([photo_clip(s, t=4) for s in range(5)], num_frames=3, frames_per_clip=2, crop=16)
    trainer = Trainer(TinyVSR(), TrainClips([photo_clip()], num_frames=3, patch_size=6), config(tmp_path), val)
    seen = []
    for rank in range(3):
        trainer.world_size, trainer.rank = 3, rank
        indices = trainer._val_indices()
        clips = {val.items[i][0] for i in indices}
        assert all(c % 3 == rank for c in clips)
        seen += indices
    assert sorted(seen) == list(range(len(val)))  # every frame of every clip once


def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) and one process, same global batch: MANA tiny through its three
    stages (DDP rebuilt at each), validation split over the ranks. Weights and scores agree to float
    rounding (measured: max |difference| of a weight 2e-7 to 9e-7)."""
    data = clip_folder(tmp_path / "data", clips=4, t=3, size=24)
    args = ["mana", "--data", str(data), "--steps", "3", "--batch-size", "2", "--patch-size", "4", "--schedule", "mana-3stage"]
    args += ["--stage-fractions", "1", "1", "1", "--lr", "1e-3", "--val-holdout", "2", "--val-frames", "1", "--val-crop", "16"]
    args += ["--val-every", "3", "--quiet", "--device", "cpu", "--seed", "3"]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "reference_models", "train"]
    result = run_python([*launch, *args, "--output", str(tmp_path / "two")], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_main([*args, "--output", str(tmp_path / "one")]) == 0
    one, two = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("one", "two"))
    diff = max(float((one["state_dict"][k] - two["state_dict"][k]).abs().max()) for k in one["state_dict"])
    print(f"max weight difference, 2 processes vs 1: {diff:.2e}", file=sys.stderr)
    assert diff < 1e-5
    logs = {n: json.loads((tmp_path / n / "log.json").read_text()) for n in ("one", "two")}
    assert logs["one"]["world_size"] == 1 and logs["two"]["world_size"] == 2
    assert [r["stage"] for r in logs["two"]["rows"]] == ["stage1", "stage2-memory", "stage3"]
    for a, b in zip(logs["one"]["rows"], logs["two"]["rows"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"]))  # the global batch's loss on both
    for key in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
        assert abs(logs["one"]["val"][-1][key] - logs["two"]["val"][-1][key]) < 1e-3, key
    assert result.stdout.count("training mana") == 1  # only rank 0 prints


def test_a_one_process_run_resumes_on_two_processes(tmp_path):
    """1 step on one process, then resumed with --steps 3 on two (torchrun, gloo) equals the same resume on
    one process: the training state does not depend on the number of processes."""
    data = clip_folder(tmp_path / "data", clips=2, t=3, size=24)
    args = ["mana", "--data", str(data), "--batch-size", "2", "--patch-size", "4", "--lr", "1e-3", "--quiet", "--device", "cpu"]
    assert train_main([*args, "--steps", "1", "--output", str(tmp_path / "one")]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    resume = ["--steps", "3"]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "reference_models", "train"]
    two_args = ["mana", "--data", str(data), "--resume", str(tmp_path / "two" / "last.pt"), "--output", str(tmp_path / "two"), *resume]
    result = run_python([*launch, *two_args], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_main(["mana", "--data", str(data), "--resume", str(tmp_path / "one" / "last.pt"), *resume]) == 0
    one, two = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("one", "two"))
    assert one["training"]["step"] == two["training"]["step"] == 3 and two["training"]["world_size"] == 2
    diff = max(float((one["state_dict"][k] - two["state_dict"][k]).abs().max()) for k in one["state_dict"])
    assert diff < 1e-5
    assert [r["lr"] for r in one["training"]["log"]] == [r["lr"] for r in two["training"]["log"]]
