import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import reference_models.cli as cli
from reference_models.allocator import MMAP_THRESHOLD_MAX, keep_freed_memory

ROOT = Path(__file__).resolve().parents[2]

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"MALLOC_ARENA_MAX": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
        {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    ],
)
def test_the_users_own_allocator_choice_is_left_alone(environ):
    assert keep_freed_memory(environ=environ) is False


@pytest.mark.parametrize(
    "kwargs", [{"mmap_threshold": MMAP_THRESHOLD_MAX + 1}, {"mmap_threshold": -1}, {"trim_threshold": -1}]
)
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be"):
        keep_freed_memory(environ={}, **kwargs)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    # In a subprocess: the settings are process-wide. A 16 MiB buffer malloc'ed, written and freed again and
    # again faults its 4096 pages in once, then comes back from the heap already resident (glibc's default maps
    # it afresh or trims it off the heap: on one machine 200-400 faults per round, depending on the history).
    script = textwrap.dedent(
        """
        import ctypes, resource
        from reference_models.allocator import keep_freed_memory
        applied = keep_freed_memory(environ={})
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
        libc.free.argtypes = (ctypes.c_void_p,)
        def churn(size, times):
            for _ in range(times):
                buffer = libc.malloc(size)
                ctypes.memset(buffer, 1, size)
                libc.free(buffer)
        churn(16 << 20, 1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        churn(16 << 20, 20)
        print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    assert applied == "True"
    assert int(faults) < 100, out.stdout


def test_the_command_line_keeps_freed_memory_except_for_help_and_list(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    for argv in (["list"], ["export", "--help"], ["run", "-h"]):
        try:
            cli.main(argv)
        except SystemExit:
            pass
    assert calls == []
    with pytest.raises(SystemExit):  # no arguments: argparse's usage error, after the process was set up
        cli.main(["export"])
    assert calls == [1]
