"""The process group of a ``torchrun`` launch, seen from the training loop.

``torchrun --nproc-per-node N -m reference_models train ...`` starts N processes and tells each its place
through the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_from_env` joins the group with NCCL on GPUs and gloo on CPU. Without those variables (a plain
``python -m reference_models train``) nothing is initialised and every helper answers for one process, so
the training loop is the same code in both cases.

What a shared cluster needs beyond joining the group:

- **An orderly exit.** :func:`shutdown` waits for every rank, frees every object that holds the group (DDP's
  reducer does) and only then destroys it, so no rank closes its connections while a peer still uses them.
  Ranks that left one by one made gloo's threads abort the interpreter at exit in about a third of the runs.
- **A dead or hung peer is named.** Every rank keeps a heartbeat and its step in the rendezvous store (torchrun's
  agent hosts it, so it outlives a dead worker). When a collective fails or times out (``--dist-timeout``),
  :func:`diagnose` reads them back and names the rank that stopped beating or is behind.
- **Signals end a rank within seconds, wherever it is.** Python runs a signal handler only when the main
  thread returns to the interpreter, which a rank blocked in a collective or in ``init_process_group`` does
  not do until the timeout. :func:`exit_watchdog` starts a thread that sees the signal through
  :func:`signal.set_wakeup_fd` and, if the main thread has not finished unwinding after a grace period, ends the
  process with the signal's status. Checkpoints are written under a partial name and renamed, so this never
  leaves a half-written checkpoint (a stale partial is removed by the next run).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PeerFailure",
    "all_reduce_sum",
    "broadcast_flag",
    "diagnose",
    "exit_watchdog",
    "failures_named",
    "init_from_env",
    "is_main",
    "local_device",
    "mean_and_all_true",
    "rank",
    "report_step",
    "shutdown",
    "world_size",
]

#: Default ``--dist-timeout``: long enough for a rank that validates or writes a checkpoint while the others
#: wait, short enough that a hung peer is reported within minutes rather than torch's 30.
DEFAULT_TIMEOUT_S = 300.0
_HEARTBEAT_S = 2.0

_store: Any = None
_heartbeat_stop = threading.Event()
_timeout_s = DEFAULT_TIMEOUT_S


class PeerFailure(RuntimeError):
    """A collective failed because another rank died, hung or left; the message names it."""


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, logs and the progress bar."""
    return rank() == 0


def local_device(device: str | None) -> str | None:
    """The device of this process: under torchrun with CUDA, ``cuda:LOCAL_RANK`` (one GPU per process)."""
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if (device is None and torch.cuda.is_available()) or (device or "").startswith("cuda"):
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def _agent_store(timeout_s: float) -> Any:
    """torchrun's rendezvous store (hosted by its agent, so it outlives the workers), under a prefix of this
    launch attempt; ``None`` outside torchrun.

    A restarted group must not read the previous attempt's keys: gloo found the dead workers' addresses there and
    failed to connect ("connectFullMesh ... Connection refused").
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=timeout_s),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"reference_models/attempt{attempt}/", store)


def _beat(store: Any, me: int) -> None:
    while not _heartbeat_stop.wait(_HEARTBEAT_S):
        try:
            store.set(f"alive/{me}", f"{time.time():.3f}")
        except Exception:  # the store's host is gone: diagnose() says so
            return


def init_from_env(device: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group described by torchrun's environment variables, if there is one.

    Args:
        device: the device this process trains on (from :func:`local_device`): NCCL for CUDA, gloo otherwise.
        timeout_s: how long a collective (and joining) waits for the other ranks before failing.

    Returns:
        ``True`` when a group of more than one process was joined.
    """
    global _store, _timeout_s
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if timeout_s <= 0:
        raise ValueError(f"--dist-timeout must be > 0 seconds, got {timeout_s:g}")
    _timeout_s = timeout_s
    cuda = (device or "").startswith("cuda")
    if cuda:
        assert device is not None
        torch.cuda.set_device(torch.device(device))
    backend = "nccl" if cuda else "gloo"
    try:
        store = _agent_store(timeout_s)
        if store is None:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        else:
            dist.init_process_group(
                backend=backend,
                store=dist.PrefixStore("group/", store),
                rank=int(os.environ["RANK"]),
                world_size=int(os.environ["WORLD_SIZE"]),
                timeout=timedelta(seconds=timeout_s),
            )
    except (RuntimeError, ValueError) as exc:
        raise PeerFailure(
            f"could not join the group of {os.environ.get('WORLD_SIZE')} processes within --dist-timeout "
            f"{timeout_s:g} s: {_first_line(exc)}"
        ) from None
    _store = None if store is None else dist.PrefixStore("status/", store)
    if _store is not None:
        me = rank()
        _store.set(f"alive/{me}", f"{time.time():.3f}")
        _store.set(f"step/{me}", "-1")
        _heartbeat_stop.clear()
        threading.Thread(target=_beat, args=(_store, me), name="rank-heartbeat", daemon=True).start()
    return True


def report_step(step: int) -> None:
    """Record the step this rank is at, for :func:`diagnose` (no-op without a group)."""
    if _store is not None:
        try:
            _store.set(f"step/{rank()}", str(step))
        except Exception:
            pass


def diagnose(exc: BaseException | None = None) -> str:
    """One line on which rank stopped the group: a rank whose heartbeat stopped (dead, or hung in native code),
    else the ranks behind the others (hung in Python), else the collective's own message."""
    cause = _first_line(exc) if exc is not None else "a collective failed"
    if _store is None:
        return f"lost contact with the other processes ({cause})"
    now, silent, steps = time.time(), [], {}
    try:
        for r in range(world_size()):
            beat = float(_store.get(f"alive/{r}"))
            if now - beat > 3 * _HEARTBEAT_S:
                silent.append(f"rank {r} ({now - beat:.0f} s without a heartbeat)")
            steps[r] = int(_store.get(f"step/{r}"))
    except Exception:
        return f"the rendezvous store is gone (its host died or the launch was stopped) ({cause})"
    if silent:
        return f"{', '.join(silent)} stopped responding: it died or hangs ({cause})"
    lowest = min(steps.values())
    behind = [r for r, s in steps.items() if s == lowest]
    if lowest < max(steps.values()):
        names = ", ".join(f"rank {r}" for r in behind)
        return f"{names} stayed at step {lowest} while others went on: it hangs ({cause})"
    return f"a peer left the group ({cause})"


@contextmanager
def failures_named() -> Iterator[None]:
    """Turn a failed collective (a peer died, hung past the timeout, or left) into :class:`PeerFailure`."""
    try:
        yield
    except PeerFailure:
        raise
    except RuntimeError as exc:
        if world_size() > 1 and _is_collective_failure(exc):
            raise PeerFailure(diagnose(exc)) from None
        raise


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket"))


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def shutdown(clean: bool = True) -> None:
    """Leave the process group (no-op without one).

    Args:
        clean: the run ended normally on this rank: wait for every other rank first (a barrier bounded by the
            timeout), so that all leave together. After a failure the barrier is skipped: a dead peer would make
            it wait for the whole timeout.
    """
    global _store
    if not (dist.is_available() and dist.is_initialized()):
        return
    _heartbeat_stop.set()
    if clean:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=_timeout_s))
            else:
                dist.barrier()
        except RuntimeError as exc:
            print(f"warning: [rank {rank()}] leaving without the other ranks: {diagnose(exc)}", file=sys.stderr)
    # DDP's reducer holds the group; destroying the group while it lives leaves gloo's threads to be torn down
    # at interpreter exit, after a peer may have gone (std::terminate).
    gc.collect()
    dist.destroy_process_group()
    _store = None


def broadcast_flag(value: bool) -> bool:
    """Rank 0's ``value`` on every rank (``value`` itself without a group): one decision for all, e.g. whether
    a checkpoint exists to resume from."""
    if world_size() == 1:
        return value
    flag = torch.tensor([1.0 if value else 0.0])
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over all processes (``values`` itself for one process)."""
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def mean_and_all_true(value: torch.Tensor, flag: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The mean of the 0-d ``value`` over all processes, and whether the 0-d bool ``flag`` is true on every
    one (so all ranks take the same branch), in one all-reduce."""
    if world_size() == 1:
        return value, bool(flag)
    both = torch.stack([value.detach().float(), flag.float()])
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    return both[0] / world_size(), bool(both[1] == world_size())


@contextmanager
def exit_watchdog(grace_s: float = 5.0, on_exit: Callable[[int], None] | None = None) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM end the process within ``grace_s`` seconds even when the main thread is
    blocked in native code (a collective, joining the group, a data-loading wait).

    The block's own handlers (raising an exception so that ``finally`` clauses run) still get the first
    chance: the watchdog only acts if the process is still alive ``grace_s`` after the signal. It then calls
    ``on_exit(signum)`` (to print the error line) and ends the process with status ``128 + signum``. Main
    thread only, and only for a group of more than one process (a single process is never stuck in a
    collective); elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                data = reader.recv(16)
            except OSError:
                return
            signums = [b for b in data if b in (signal.SIGINT, signal.SIGTERM)]
            if not signums:
                if not data:
                    return
                continue
            if done.wait(grace_s):
                return
            if on_exit is not None:
                on_exit(signums[0])
            sys.stderr.flush()
            os._exit(128 + signums[0])

    thread = threading.Thread(target=watch, name="signal-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        reader.close()
