"""Keeping freed memory in the process, so that a network's large temporaries are not faulted in afresh.

glibc's ``malloc`` serves a large request (by default above 128 KiB, a threshold it raises as it goes, up to
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` when it is freed, and it returns the top of its
heap to the system once more than 128 KiB lies free there. A network allocates the same multi-MB activations,
oneDNN scratch buffers and outputs at every call; each of them then costs a page fault per 4 KiB page touched
(the kernel zeroes the page), and the threads of a convolution wait on each other's faults. How often this
happens depends on what the process allocated before, so the same convolution can take up to twice as long in a
fresh process. :func:`keep_freed_memory` sets the thresholds so that freed memory stays in the process for the
next call; ``docs/benchmarks.md`` ("Memory allocator") has the measurements.

The command line (``run``, ``train``, ``evaluate``, ``export``, ``demo``) calls it at start. It changes nothing
when the user chose for themselves: a ``MALLOC_*`` variable in the environment, or another allocator preloaded
(jemalloc, tcmalloc, mimalloc), and nothing off Linux/glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD_MAX", "keep_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``): requests above it are
#: always mapped afresh.
MMAP_THRESHOLD_MAX = 32 * 2**20

_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def _user_chose(environ: Mapping[str, str]) -> bool:
    """The environment sets glibc's malloc tunables or preloads another allocator."""
    if any(name.startswith("MALLOC_") for name in environ):
        return True
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return True
    preload = environ.get("LD_PRELOAD", "")
    return any(name in preload for name in _PRELOADED_ALLOCATORS)


def keep_freed_memory(
    *,
    mmap_threshold: int = MMAP_THRESHOLD_MAX,
    trim_threshold: int = 2**30,
    top_pad: int = 64 * 2**20,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse: requests up to ``mmap_threshold`` bytes come from
    the heap, and the heap is given back to the system only when more than ``trim_threshold`` bytes lie free
    at its top; it grows by ``top_pad`` bytes beyond each request.

    The process's resident memory then stays near its peak instead of following the live tensors; the peak
    itself is about the same. Call it once, early (the command line does).

    Args:
        mmap_threshold: bytes; larger requests are still mapped afresh (at most :data:`MMAP_THRESHOLD_MAX`).
        trim_threshold: bytes of free heap top kept before any is returned to the system.
        top_pad: bytes the heap grows by beyond each request that extends it.
        environ: the environment to read the user's own choice from (default: ``os.environ``).

    Returns:
        Whether the settings were applied: ``False`` off Linux, without glibc's ``mallopt``, when ``environ``
        sets a ``MALLOC_*`` variable or ``glibc.malloc`` tunables, or preloads jemalloc, tcmalloc or mimalloc.

    Raises:
        ValueError: ``mmap_threshold`` is not in ``[0, MMAP_THRESHOLD_MAX]`` or a size is negative.

    Examples:
        >>> keep_freed_memory(environ={"MALLOC_TRIM_THRESHOLD_": "0"})  # the user's own setting stays
        False
    """
    if not 0 <= mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be in [0, {MMAP_THRESHOLD_MAX}], got {mmap_threshold}")
    if trim_threshold < 0 or top_pad < 0:
        raise ValueError(f"trim_threshold and top_pad must be >= 0, got {trim_threshold} and {top_pad}")
    if not sys.platform.startswith("linux") or _user_chose(os.environ if environ is None else environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad))
    # mallopt returns 1 on success; musl's stub returns 0 and does nothing.
    return all([mallopt(param, value) == 1 for param, value in settings])
