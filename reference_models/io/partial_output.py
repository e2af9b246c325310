"""Temporary ("partial") names beside an output, and finding the ones a killed run left behind.

An output ``out`` (a folder or a file) is written as ``.out.partial-<pid>-<token>`` in the same folder and
renamed into place when complete, so that no reader ever sees half of it. The writer's process id in the
name tells a later run whether a partial is stale: its writer no longer runs (it was killed, or the machine
went down), so the partial can be removed or, for a folder, resumed from. Names stay within the
file-system limit of 255 bytes however long the output's name is: a long name is shortened and a hash of the
full name keeps outputs with the same beginning apart. Partials are created with :func:`os.mkdir` /
:func:`os.open`, so they get the permissions the umask gives (0755 / 0644 typically), not the 0700 / 0600
of :mod:`tempfile`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "NAME_MAX",
    "partial_prefix",
    "create_partial_dir",
    "create_partial_file",
    "stale_partials",
    "remove_stale_partials",
    "remove_partial",
    "current_umask",
    "signals_deferred",
]

NAME_MAX = 255
_TAIL_BYTES = len("-4194304-0123456789abcdef") + 16  # "-<pid>-<token>" and room for a file suffix


def partial_prefix(final: Path, suffix: str = "") -> str:
    """``.NAME.partial-`` for output ``final`` whose partials end in ``suffix`` (``NAME`` is its name without
    ``suffix``), shortened (and hashed) to fit in NAME_MAX bytes.

    Examples:
        >>> partial_prefix(Path("renders/out"))
        '.out.partial-'
        >>> partial_prefix(Path("renders/clip.mp4"), ".mp4")
        '.clip.partial-'
        >>> len(partial_prefix(Path("x" * 250)).encode()) <= 255 - 41
        True
    """
    name = final.name.removesuffix(suffix) if suffix else final.name
    room = NAME_MAX - _TAIL_BYTES - len("..partial-")
    if len(name.encode()) > room:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name.encode()[: room - 9].decode(errors="ignore") + "~" + digest
    return f".{name}.partial-"


# Partials this process made: a process id in a name says "running" only if that process made it, which
# matters where every run gets the same pid (containers).
_OWN: set[Path] = set()


def _new_name(final: Path, suffix: str) -> Path:
    return final.parent / f"{partial_prefix(final, suffix)}{os.getpid()}-{secrets.token_hex(8)}{suffix}"


def create_partial_dir(final: Path) -> Path:
    """A new empty partial folder beside ``final`` (its parents are created)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = _new_name(final, "")
        try:
            os.mkdir(path)
            _OWN.add(path)
            return path
        except FileExistsError:
            continue


def create_partial_file(final: Path, suffix: str | None = None) -> Path:
    """A new empty partial file beside ``final`` ending in ``suffix`` (default: ``final``'s, so that formats
    are still guessed from the name; ``""`` gives ``.NAME.partial-*`` for writers that need no suffix)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = _new_name(final, final.suffix if suffix is None else suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            _OWN.add(path)
            return path
        except FileExistsError:
            continue


def _running(pid: int, path: Path) -> bool:
    if pid == os.getpid():
        return path in _OWN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_partials(final: Path, suffix: str = "") -> list[Path]:
    """Partials of ``final`` (names ending in ``suffix``) whose writing process is gone, newest first;
    partials of running processes are left out. One without a process id (older versions) counts as stale."""
    prefix, ending = re.escape(partial_prefix(final, suffix)), re.escape(suffix)
    pattern = re.compile(prefix + r"(?:(\d+)-)?[0-9a-zA-Z_]+" + ending + "$")
    found = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    for path in entries:
        match = pattern.match(path.name)
        if match and not (match.group(1) and _running(int(match.group(1)), path)):
            found.append(path)
    return sorted(found, key=lambda p: p.lstat().st_mtime, reverse=True)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (setting it to read it back
    races with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_partial(path: Path) -> None:
    """Delete a partial folder (with its contents) or file; one already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_partials(final: Path, suffix: str = "") -> list[Path]:
    """Delete the partials of ``final`` that :func:`stale_partials` finds; returns them."""
    stale = stale_partials(final, suffix)
    for path in stale:
        remove_partial(path)
    return stale


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are raised again when it ends (main thread only), so
    that moving a partial output into place is never cut half-way: a folder gets all its new frames or none.
    (Blocking the signals with a mask is not enough: another thread of the process may take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in _DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])
