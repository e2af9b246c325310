"""Choosing between exact implementations of one operation by timing them once per shape, as ``cudnn.benchmark``
does.

Which implementation is faster depends on the CPU (issue 22: MANA's fused flash-attention path wins on AVX-512/AMX
and loses to plain matrix products on AVX2) and on the shape, so a fixed rule tuned on one machine is wrong on the
other. :func:`measured_choice` runs every candidate on the first call with a new key, keeps the fastest for that
key, and returns the result of the call it timed (so the first call does the work of all candidates once, later
calls that of the winner only). The candidates must compute the same thing up to float rounding.

Measuring is on by default (off while tracing or compiling, where every candidate run would enter the graph);
:func:`kernel_benchmark` turns it off (every call takes the default candidate), which the tests do so that their
results do not depend on the machine's timings.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import torch

__all__ = ["kernel_benchmark", "kernel_benchmark_enabled", "kernel_choices", "measured_choice"]

T = TypeVar("T")

_ENABLED = True
_CHOICES: dict[Hashable, str] = {}
#: Rounds of timing per candidate on a new key: the best of two damps one-off stalls of a shared machine.
_ROUNDS = 2


def kernel_benchmark_enabled() -> bool:
    """Whether :func:`measured_choice` measures (``True``) or takes the default candidate."""
    return _ENABLED


@contextlib.contextmanager
def kernel_benchmark(enabled: bool) -> Iterator[None]:
    """Measure (``True``) or always take the default candidate (``False``) inside this context.

    Examples:
        >>> with kernel_benchmark(False):
        ...     measured_choice("example", {"a": lambda: 1, "b": lambda: 2}, default="b")
        2
    """
    global _ENABLED
    previous, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = previous


def kernel_choices() -> dict[Hashable, str]:
    """The choices made so far in this process: key -> name of the fastest candidate (a copy)."""
    return dict(_CHOICES)


def measured_choice(key: Hashable, candidates: dict[str, Callable[[], T]], default: str) -> T:
    """The result of the fastest of ``candidates`` for ``key``, timing them all on the first call with ``key``.

    Args:
        key: what the speed depends on (shapes, dtype, device, threads ...); the thread count is added here.
        candidates: name -> a function computing the result (all the same result up to rounding).
        default: the candidate taken when measuring is off.

    Examples:
        >>> measured_choice(("doc", 1), {"sum": lambda: sum(range(10)), "formula": lambda: 9 * 10 // 2}, "sum")
        45
    """
    if not _ENABLED or torch.jit.is_tracing() or torch.compiler.is_compiling():  # a trace would record every candidate
        return candidates[default]()
    key = (key, torch.get_num_threads())
    if key in _CHOICES:
        return candidates[_CHOICES[key]]()
    best: dict[str, float] = {}
    results: dict[str, T] = {}
    for _ in range(_ROUNDS):
        for name, run in candidates.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    winner = min(best, key=best.__getitem__)
    _CHOICES[key] = winner
    return results[winner]
