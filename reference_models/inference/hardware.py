"""What the CPU at hand can do, as far as choosing a precision and naming the machine in a table go.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the flags are unknown (empty) and the model name comes from
:func:`platform.processor`. Tests replace :func:`cpu_flags` to play another CPU.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

__all__ = ["CPUINFO", "cpu_flags", "cpu_model_name", "describe_cpu", "bfloat16_flag", "has_amx"]

CPUINFO = Path("/proc/cpuinfo")

#: Flags of CPUs that multiply bfloat16 in hardware: AMX tiles (Intel Sapphire Rapids and later) and the
#: AVX-512 dot products ``vdpbf16ps`` (Intel Cooper Lake, AMD Zen 4 and later).
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def _field(text: str, name: str) -> str | None:
    """The value of the first ``name : value`` line of a cpuinfo text."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU (``/proc/cpuinfo``'s ``flags`` line; empty when unknown).

    Examples:
        >>> sorted(cpu_flags("processor : 0\\nflags : fpu avx2 avx512_bf16\\n"))
        ['avx2', 'avx512_bf16', 'fpu']
    """
    flags = _field(_cpuinfo() if cpuinfo is None else cpuinfo, "flags")
    return frozenset(flags.split()) if flags else frozenset()


def has_amx() -> bool:
    """Whether the CPU has AMX tiles for bfloat16 (``amx_bf16``)."""
    return "amx_bf16" in cpu_flags()


def bfloat16_flag() -> str | None:
    """The first flag of :data:`BFLOAT16_FLAGS` the CPU has (AMX first), ``None`` when it has neither."""
    flags = cpu_flags()
    return next((flag for flag in BFLOAT16_FLAGS if flag in flags), None)


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, as ``lscpu`` shows it)."""
    return _field(_cpuinfo(), "model name") or platform.processor() or "unknown CPU"


def describe_cpu() -> str:
    """One line naming the CPU for a table: model, PyTorch's capability, AMX yes/no, threads.

    Examples:
        >>> describe_cpu().count(";")
        3
    """
    return (
        f"CPU: {cpu_model_name()}; capability {torch.backends.cpu.get_cpu_capability()}; "
        f"AMX {'yes' if has_amx() else 'no'}; {torch.get_num_threads()} threads"
    )
