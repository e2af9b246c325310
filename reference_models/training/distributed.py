"""The process group of a ``torchrun`` launch, seen from the training loop.

``torchrun --nproc-per-node N -m reference_models train ...`` starts N processes and tells each its place
through the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_from_env` joins the group with NCCL on GPUs and gloo on CPU. Without those variables (a plain
``python -m reference_models train``) nothing is initialised and every helper answers for one process, so
the training loop is the same code in both cases.
"""

from __future__ import annotations

import os
from typing import cast

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "shutdown", "rank", "world_size", "is_main", "all_reduce_sum", "mean_and_all_true", "local_device"]


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


def init_from_env(device: str | None) -> bool:
    """Join the process group described by torchrun's environment variables, if there is one.

    Args:
        device: the device this process trains on (from :func:`local_device`): NCCL for CUDA, gloo otherwise.

    Returns:
        ``True`` when a group of more than one process was joined.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    cuda = (device or "").startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(cast(str, device)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
