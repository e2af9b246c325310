"""Peak memory of one benchmark pass, shared by the benchmark scripts (each row runs in its own subprocess).

CPU: the peak resident set size during the pass minus the resident set size before it (Linux: ``VmHWM`` after
resetting it through ``/proc/self/clear_refs``; elsewhere the process's ``ru_maxrss``, which also counts what
came before). Run the subprocess with :data:`SUBPROCESS_ENV`: a fixed glibc mmap threshold returns freed
multi-MB buffers to the system, so the RSS follows the live tensors instead of heap fragmentation.
CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before the pass.
"""

from __future__ import annotations

import os
import resource

import torch

SUBPROCESS_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakMemory:
    """``start()`` before the timed passes, ``peak_mib()`` after them."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.base = 0.0

    def start(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
            return
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            self.base = _maxrss_mib()
            return
        self.base = _status_mib("VmRSS") or 0.0

    def peak_mib(self) -> float:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20 - self.base
        peak = _status_mib("VmHWM")
        return (peak if peak is not None else _maxrss_mib()) - self.base
