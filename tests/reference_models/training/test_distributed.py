"""Data-parallel training on torchrun: two gloo processes on CPU give the weights of one process with the
same global batch; each rank's share of the samples and of the validation clips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference_models import create_model
from reference_models.cli.train import main as train_main
from reference_models.training import TrainClips, Trainer, ValClips
from reference_models.training.trainer import _StepSampler, seed_everything
from tests.reference_models.training.tiny import REPO, TinyVSR, clip_folder, config, photo_clip, python_env, run_python


@given(
    start=st.integers(0, 20),
    steps=st.integers(1, 5),
    per_rank=st.integers(1, 4),
    world=st.integers(1, 4),
    length=st.integers(1, 50),
)
def test_ranks_share_each_global_batch(start, steps, per_rank, world, length):
    """Step k's samples are k * B ... k * B + B - 1 whatever the number of processes; rank r takes its slice."""
    batch = per_rank * world
    whole = list(_StepSampler(start, start + steps, batch, length))
    shares = [list(_StepSampler(start, start + steps, batch, length, rank, world)) for rank in range(world)]
    assert all(len(s) == steps * per_rank for s in shares)
    for k in range(steps):
        joined = [i for s in shares for i in s[k * per_rank : (k + 1) * per_rank]]
        assert (
            joined == whole[k * batch : (k + 1) * batch] == [((start + k) * batch + j) % length for j in range(batch)]
        )


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


def _max_and_relative_difference(one: dict, two: dict, start: dict | None = None) -> tuple[float, float]:
    """The largest weight difference, and the difference's L2 norm relative to how far the weights moved
    from ``start`` (or to their norm without it)."""
    diff = sum(float((one[k].double() - two[k].double()).pow(2).sum()) for k in one) ** 0.5
    ref = sum(float((one[k].double() - (start[k].double() if start else 0)).pow(2).sum()) for k in one) ** 0.5
    return max(float((one[k] - two[k]).abs().max()) for k in one), diff / ref


#: Adam divides by the square root of the second moment, so for weights whose gradient is near zero the float
#: rounding of the all-reduced gradient (its summation order depends on the CPU and the thread count) changes the
#: update by up to the learning rate itself. Such weights are few: the difference is judged by its L2 norm against
#: how far all weights moved (measured 1e-4 to 1e-2 on AVX2 and AMX machines), which a wrong share of the
#: batch or a wrong average would make of order 1.
MOVED_FRACTION = 1e-2


def _train_args(data, steps: int, **extra: str) -> list[str]:
    args = [
        "mana",
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--batch-size",
        "2",
        "--patch-size",
        "4",
        "--schedule",
        "mana-3stage",
    ]
    args += [
        "--stage-fractions",
        "1",
        "1",
        "1",
        "--lr",
        "1e-3",
        "--val-holdout",
        "2",
        "--val-frames",
        "1",
        "--val-crop",
        "16",
    ]
    args += ["--val-every", str(steps), "--quiet", "--device", "cpu", "--seed", "3"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    return args


def _initial_weights(seed: int) -> dict:
    """The weights ``train mana --seed SEED`` starts from."""
    seed_everything(seed)
    return create_model("mana", "tiny").state_dict()


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "reference_models", "train"]


def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) and one process, same global batch: MANA tiny through its three
    stages (DDP rebuilt at each), validation split over the ranks. The first step's loss (same weights, same
    global batch) agrees to float rounding; the weights after three Adam steps agree within
    :data:`MOVED_FRACTION` of how far they moved (the two runs also use different thread counts: 1 per
    process under torchrun, the default here, so a tolerance that holds only for one summation order fails)."""
    data = clip_folder(tmp_path / "data", clips=4, t=3, size=24)
    args = _train_args(data, 3)
    result = run_python([*TORCHRUN, *args, "--output", str(tmp_path / "two")], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_main([*args, "--output", str(tmp_path / "one")]) == 0
    one, two = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in ("one", "two"))
    start = _initial_weights(seed=3)
    largest, relative = _max_and_relative_difference(one, two, start)
    print(f"2 processes vs 1: max weight difference {largest:.2e}, {relative:.2e} of the movement", file=sys.stderr)
    assert relative < MOVED_FRACTION
    logs = {n: json.loads((tmp_path / n / "log.json").read_text()) for n in ("one", "two")}
    assert logs["one"]["world_size"] == 1 and logs["two"]["world_size"] == 2
    assert [r["stage"] for r in logs["two"]["rows"]] == ["stage1", "stage2-memory", "stage3"]
    first = logs["one"]["rows"][0]["loss"], logs["two"]["rows"][0]["loss"]
    assert abs(first[0] - first[1]) <= 1e-5 * abs(first[0])  # a mean of a few hundred float32 terms
    for a, b in zip(logs["one"]["rows"], logs["two"]["rows"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-2 * abs(a["loss"])  # the global batch's loss on both
    for key in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
        assert abs(logs["one"]["val"][-1][key] - logs["two"]["val"][-1][key]) < 0.05, key
    assert result.stdout.count("training mana") == 1  # only rank 0 prints


def test_a_one_process_run_resumes_on_two_processes(tmp_path):
    """1 step on one process, then resumed with --steps 3 on two (torchrun, gloo) equals the same resume on
    one process: the training state does not depend on the number of processes."""
    data = clip_folder(tmp_path / "data", clips=2, t=3, size=24)
    args = [
        "mana",
        "--data",
        str(data),
        "--batch-size",
        "2",
        "--patch-size",
        "4",
        "--lr",
        "1e-3",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert train_main([*args, "--steps", "1", "--output", str(tmp_path / "one")]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    shutil.copy(tmp_path / "one" / "last.pt", tmp_path / "one_step.pt")
    resume = ["--steps", "3"]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "reference_models", "train"]
    two_args = [
        "mana",
        "--data",
        str(data),
        "--resume",
        str(tmp_path / "two" / "last.pt"),
        "--output",
        str(tmp_path / "two"),
        *resume,
    ]
    result = run_python([*launch, *two_args], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_main(["mana", "--data", str(data), "--resume", str(tmp_path / "one" / "last.pt"), *resume]) == 0
    one, two = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("one", "two"))
    assert one["training"]["step"] == two["training"]["step"] == 3 and two["training"]["world_size"] == 2
    start = torch.load(tmp_path / "one_step.pt", weights_only=True)["state_dict"]
    assert _max_and_relative_difference(one["state_dict"], two["state_dict"], start)[1] < MOVED_FRACTION
    assert [r["lr"] for r in one["training"]["log"]] == [r["lr"] for r in two["training"]["log"]]


def _workers(parent: int) -> dict[int, int]:
    """``{rank: pid}`` of the training processes under torchrun agent ``parent``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
            if ranks:
                found[ranks[0]] = int(entry.name)
    return found


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launch ended (status {proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _launch(args: list[str], *launch: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "reference_models", "train", *args]
    return subprocess.Popen(
        command, cwd=REPO, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_elastic_restart_after_a_killed_worker_resumes_and_ends_with_the_same_weights(tmp_path):
    """``torchrun --max-restarts 1`` with ``--resume auto``: a worker SIGKILLed after the first checkpoint
    (as an out-of-memory kill would) costs only the steps since it; the restarted group resumes from last.pt and
    ends with the weights of an uninterrupted run."""
    data = clip_folder(tmp_path / "data", clips=4, t=3, size=24)
    args = _train_args(data, 8, checkpoint_every="2", resume="auto", schedule="cosine")
    proc = _launch(
        [*args, "--output", str(tmp_path / "killed")], "--standalone", "--nproc-per-node", "2", "--max-restarts", "1"
    )
    try:
        _wait_for(lambda: (tmp_path / "killed" / "last.pt").exists(), 240, "the first checkpoint", proc)
        workers = _wait_for(lambda: _workers(proc.pid), 10, "the workers")
        os.kill(workers[max(workers)], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "no " in out and "starting a new run" in out  # the first attempt
    assert "resumed" in out and "at step" in out, out  # the restarted attempt
    assert train_main([*args, "--output", str(tmp_path / "whole")]) == 0
    killed, whole = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("killed", "whole"))
    assert killed["training"]["step"] == whole["training"]["step"] == 8
    start = _initial_weights(seed=3)
    assert _max_and_relative_difference(whole["state_dict"], killed["state_dict"], start)[1] < MOVED_FRACTION
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]  # no partial left


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_match_one_process(tmp_path):
    """Two torchrun agents (``--nnodes 2``, c10d rendezvous on localhost), one process each, train as one world
    of two and end with the weights of one process."""
    data = clip_folder(tmp_path / "data", clips=4, t=3, size=24)
    args = _train_args(data, 2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rdzv = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"localhost:{port}",
        "--rdzv-id",
        "test",
    ]
    nodes = [_launch([*args, "--output", str(tmp_path / "two")], *rdzv, "--node-rank", str(k)) for k in (0, 1)]
    try:
        results = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [n.returncode for n in nodes] == [0, 0], results
    assert json.loads((tmp_path / "two" / "log.json").read_text())["world_size"] == 2
    assert train_main([*args, "--output", str(tmp_path / "one")]) == 0
    one, two = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in ("one", "two"))
    assert _max_and_relative_difference(one, two, _initial_weights(seed=3))[1] < MOVED_FRACTION


@pytest.mark.slow
def test_a_hung_peer_is_named_and_sigterm_ends_a_rank_blocked_in_a_collective(tmp_path):
    """Rank 1 stops (SIGSTOP: hung) after the first checkpoint. Rank 0 blocks in its next collective; a SIGTERM
    there ends it within seconds with status 143 (Python's own handler cannot run inside the collective). A second
    launch with a short ``--dist-timeout`` reports by itself which rank hangs."""
    data = clip_folder(tmp_path / "data", clips=4, t=3, size=24)
    outcomes = {}
    for timeout, output in ((600, "terminated"), (6, "timed_out")):
        args = _train_args(data, 200, checkpoint_every="1", dist_timeout=str(timeout))
        proc = _launch([*args, "--output", str(tmp_path / output)], "--standalone", "--nproc-per-node", "2")
        try:
            _wait_for(lambda output=output: (tmp_path / output / "last.pt").exists(), 240, "the first checkpoint", proc)
            workers = _wait_for(
                lambda proc=proc: _workers(proc.pid) if len(_workers(proc.pid)) == 2 else None, 10, "the workers"
            )
            os.kill(workers[1], signal.SIGSTOP)
            time.sleep(4 * 2.0)  # rank 0 is in a collective by now, and rank 1's heartbeat has gone stale
            start = time.monotonic()
            if output == "terminated":
                os.kill(workers[0], signal.SIGTERM)
            _wait_for(
                lambda workers=workers: not Path(f"/proc/{workers[0]}").exists() or _zombie(workers[0]),
                60,
                "rank 0 to end",
            )
            outcomes[output] = time.monotonic() - start
            os.kill(workers[1], signal.SIGKILL)
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        lines = [line for line in err.splitlines() if line.startswith("error: [rank 0]")]
        assert len(lines) == 1, err
        if output == "terminated":
            assert "SIGTERM" in lines[0] or "terminated" in lines[0], lines
        else:
            assert "rank 1" in lines[0].split("[rank 0]", 1)[1] and ("hang" in lines[0] or "responding" in lines[0]), (
                lines
            )
        assert not [p for p in (tmp_path / output).iterdir() if p.name.startswith(".")]  # no half-written checkpoint
    assert outcomes["terminated"] < 20, outcomes  # the watchdog's grace period, not the 600 s timeout
    assert outcomes["timed_out"] < 6 + 30, outcomes


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_resume_auto_starts_fresh_then_resumes_and_refuses_another_models_run(tmp_path, capsys):
    data = clip_folder(tmp_path / "data", clips=2, t=3, size=24)
    args = [
        "--data",
        str(data),
        "--batch-size",
        "2",
        "--patch-size",
        "4",
        "--quiet",
        "--device",
        "cpu",
        "--resume",
        "auto",
    ]
    out = tmp_path / "run"
    assert train_main(["mana", *args, "--steps", "1", "--output", str(out)]) == 0
    assert f"--resume auto: no {out / 'last.pt'} yet; starting a new run" in capsys.readouterr().out
    assert train_main(["mana", *args, "--steps", "2", "--output", str(out)]) == 0
    assert f"resumed {out / 'last.pt'} at step 1 of 2" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["training"]["step"] == 2
    assert train_main(["vsrt", *args, "--steps", "2", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out / 'last.pt'} holds a mana run, not vsrt: give another --output or --resume"]
