"""A :class:`~vsrblocks.recurrent.FeatureStore` that keeps what fits a memory budget and spills the rest.

Bidirectional propagation over a whole video keeps one or more feature maps per frame until a later sweep
reads them; :class:`SpillingFeatureStore` bounds that memory. Tensors stay where they were ``put`` (CPU or
GPU) while their bytes fit ``max_bytes``; beyond it, the least recently used ones are evicted: CUDA tensors
to pinned CPU memory first (up to ``pinned_bytes``), then everything to files in a private temporary folder.
A ``get`` of an evicted tensor reads it back (exactly: same dtype, shape, device and bits) and makes it
resident again; its file is kept until the tensor is discarded or replaced, so evicting it a second time
costs nothing.

Least recently used is the right order for propagation: a sweep reads the previous sweep's features in
the reverse of the order they were written, so the oldest features are the ones needed last.

Spill files are written and read with plain ``write``/``readinto`` calls (no memory map is kept: mapped
pages count in the resident memory of the process, which must stay bounded). The folder is removed by
:meth:`~SpillingFeatureStore.close`, on leaving a ``with`` block (also through ``KeyboardInterrupt`` or any
exception a signal handler raises), when the store is garbage collected and at interpreter exit; folders
left by a process that was killed outright (its name holds the process id) are removed by the next store
created in the same parent folder.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from vsrblocks.recurrent.feature_store import FeatureStore

__all__ = ["SpillingFeatureStore", "SpillDiskFullError", "remove_stale_spill_folders"]

_PREFIX = "vsrblocks-spill-"
_FOLDER = re.compile(re.escape(_PREFIX) + r"(\d+)-")


class SpillDiskFullError(OSError):
    """The spill folder's file system is full: names the folder and the bytes that did not fit."""


@dataclass
class _Spilled:
    """Where an evicted tensor lives now, and what it was."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    nbytes: int
    pinned: torch.Tensor | None = None  # flat uint8 copy in pinned CPU memory
    path: Path | None = None  # its bytes in a spill file


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's contents as a flat contiguous uint8 tensor (a view where possible: no copy)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_spill_folders(parent: str | os.PathLike[str]) -> list[Path]:
    """Remove the spill folders in ``parent`` that belong to this user and to processes that no longer run
    (killed before they could clean up); returns them."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _FOLDER.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or _pid_alive(int(match.group(1))):
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class SpillingFeatureStore(FeatureStore):
    """Feature store bounded by a memory budget: least recently used tensors spill to pinned CPU memory
    (CUDA tensors) and to files in a private temporary folder.

    ``put`` keeps the tensor itself (no copy) while it fits; a tensor larger than the whole budget goes
    straight to the next tier. ``get`` returns a tensor equal to the one put (dtype, shape, device, bits;
    contiguous; for inference: a spilled tensor comes back without its autograd history). Use the store as a
    context manager, or call :meth:`close`, to remove its folder at once.

    Args:
        max_bytes: budget of resident tensors (on their own device; CPU or GPU memory).
        pinned_bytes: budget of pinned CPU memory for evicted CUDA tensors (0: straight to disk).
        directory: parent of the spill folder (default: the system's temporary folder, ``$TMPDIR``).

    Attributes:
        resident_bytes, pinned_bytes_used, disk_bytes: bytes held in each tier now.
        peak_resident_bytes: the most resident bytes held at once.
        folder: the spill folder, created on the first spill to disk (``None`` before).

    Raises (from ``put``/``get``):
        SpillDiskFullError: the spill folder's disk is full (an ``OSError`` naming the folder and the bytes needed).

    Examples:
        >>> with SpillingFeatureStore(max_bytes=1000) as store:
        ...     for i in range(4):
        ...         store.put("backward", i, torch.full((1, 2, 8, 8), float(i)))  # 512 bytes each
        ...     spilled = store.disk_bytes
        ...     back = store.get("backward", 0)
        >>> spilled, float(back[0, 0, 0, 0]), store.folder is None or not store.folder.exists()
        (1536, 0.0, True)
    """

    def __init__(
        self, max_bytes: int, *, pinned_bytes: int = 0, directory: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        if max_bytes < 0 or pinned_bytes < 0:
            raise ValueError(f"max_bytes and pinned_bytes must be >= 0, got {max_bytes} and {pinned_bytes}")
        self.max_bytes = int(max_bytes)
        self.max_pinned_bytes = int(pinned_bytes)
        self.directory = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        # Resident tensors live in FeatureStore's dict, kept in least-recently-used-first order.
        self._items: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._spilled: dict[tuple[str, int], _Spilled] = {}
        self._pinned_order: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.resident_bytes = 0
        self.pinned_bytes_used = 0
        self.disk_bytes = 0
        self.peak_resident_bytes = 0
        self.folder: Path | None = None
        self._files = 0
        self._finalizer: weakref.finalize[..., SpillingFeatureStore] | None = None

    def _ensure_folder(self) -> Path:
        if self.folder is None:
            remove_stale_spill_folders(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self.directory))
            # Runs on garbage collection and at interpreter exit, if close() did not.
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        return self.folder

    def put(self, key: str, index: int, value: torch.Tensor) -> None:
        self.discard(key, index)
        size = _nbytes(value)
        if size > self.max_bytes:
            self._spill((key, index), value)
            return
        self._items[(key, index)] = value
        self.resident_bytes += size
        self._evict_to_budget()

    def get(self, key: str, index: int) -> torch.Tensor:
        item = (key, index)
        value = self._items.get(item)
        if value is not None:
            self._items.move_to_end(item)
            return value
        spilled = self._spilled.get(item)
        if spilled is None:
            return super().get(key, index)  # raises the KeyError
        value = self._read(spilled)
        if spilled.nbytes <= self.max_bytes:
            if spilled.pinned is not None:  # resident again: the pinned copy is no longer needed
                self._drop_pinned(item, spilled)
            if spilled.path is None:
                del self._spilled[item]
            self._items[item] = value
            self.resident_bytes += spilled.nbytes
            self._evict_to_budget(keep=item)
        return value

    def discard(self, key: str, index: int) -> None:
        item = (key, index)
        value = self._items.pop(item, None)
        if value is not None:
            self.resident_bytes -= _nbytes(value)
        spilled = self._spilled.pop(item, None)
        if spilled is not None:
            self._drop_pinned(item, spilled)
            if spilled.path is not None:
                spilled.path.unlink(missing_ok=True)
                self.disk_bytes -= spilled.nbytes

    def clear(self) -> None:
        for item in [*self._items, *self._spilled]:
            self.discard(*item)

    def __len__(self) -> int:
        return len(self._items.keys() | self._spilled.keys())

    def __contains__(self, item: tuple[str, int]) -> bool:
        return item in self._items or item in self._spilled

    def close(self) -> None:
        """Forget everything and remove the spill folder."""
        self._items.clear()
        self._spilled.clear()
        self._pinned_order.clear()
        self.resident_bytes = self.pinned_bytes_used = self.disk_bytes = 0
        if self._finalizer is not None:
            self._finalizer()  # removes the folder, once
        self.folder = None
        self._finalizer = None

    def __enter__(self) -> SpillingFeatureStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _evict_to_budget(self, keep: tuple[str, int] | None = None) -> None:
        while self.resident_bytes > self.max_bytes:
            item = next(iter(self._items))
            if item == keep:  # never evict what get() is about to return
                self._items.move_to_end(item)
                if next(iter(self._items)) == keep:
                    break
                continue
            value = self._items.pop(item)
            self.resident_bytes -= _nbytes(value)
            self._spill(item, value)
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def _spill(self, item: tuple[str, int], value: torch.Tensor) -> None:
        """Move ``value`` out of the resident tier (pinned memory for CUDA tensors where it fits, else disk)."""
        spilled = self._spilled.get(item)
        if spilled is not None and spilled.path is not None:
            return  # its file is still there: a tensor that was read back is never changed in the store
        size = _nbytes(value)
        spilled = _Spilled(value.shape, value.dtype, value.device, size)
        if value.is_cuda and size <= self.max_pinned_bytes:
            while self.pinned_bytes_used + size > self.max_pinned_bytes:
                oldest = next(iter(self._pinned_order))
                self._pinned_to_disk(oldest, self._spilled[oldest])
            spilled.pinned = torch.empty(size, dtype=torch.uint8, pin_memory=True)
            spilled.pinned.copy_(_as_bytes(value))
            self._pinned_order[item] = None
            self.pinned_bytes_used += size
        else:
            self._write(spilled, _as_bytes(value).cpu())
        self._spilled[item] = spilled  # only once it is somewhere: a failed write leaves no entry behind

    def _pinned_to_disk(self, item: tuple[str, int], spilled: _Spilled) -> None:
        pinned = spilled.pinned
        assert pinned is not None  # only pinned tensors move to disk from there
        self._drop_pinned(item, spilled)
        self._write(spilled, pinned)

    def _drop_pinned(self, item: tuple[str, int], spilled: _Spilled) -> None:
        if spilled.pinned is not None:
            self.pinned_bytes_used -= spilled.nbytes
            spilled.pinned = None
            self._pinned_order.pop(item, None)

    def _write(self, spilled: _Spilled, data: torch.Tensor) -> None:
        folder = self._ensure_folder()
        self._files += 1
        path = folder / f"{self._files}.bin"
        try:
            with open(path, "wb", buffering=0) as file:
                view = data.numpy().data  # a memoryview of the tensor's bytes: no copy
                written = 0
                while written < len(view):
                    written += file.write(view[written:])
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpillDiskFullError(
                    exc.errno,
                    f"no space left for the feature spill folder '{folder}': {spilled.nbytes} more bytes needed "
                    f"({self.disk_bytes} spilled there already); free disk space, point the spill folder elsewhere "
                    "(TMPDIR) or raise the memory budget",
                ) from exc
            raise
        spilled.path = path
        self.disk_bytes += spilled.nbytes

    def _read(self, spilled: _Spilled) -> torch.Tensor:
        if spilled.pinned is not None:
            data = spilled.pinned
        else:
            data = torch.empty(spilled.nbytes, dtype=torch.uint8)
            assert spilled.path is not None  # neither pinned nor resident: it is on disk
            with open(spilled.path, "rb", buffering=0) as file:
                view = data.numpy().data
                read = 0
                while read < spilled.nbytes:
                    count = file.readinto(view[read:])
                    if not count:
                        raise OSError(f"spill file '{spilled.path}' is truncated: {read} of {spilled.nbytes} bytes")
                    read += count
        value = data.view(spilled.dtype) if spilled.dtype != torch.uint8 else data
        value = value.reshape(spilled.shape)
        if spilled.pinned is not None:
            return value.to(spilled.device, non_blocking=False, copy=True)
        return value.to(spilled.device)

    def extra_repr(self) -> str:
        return f"max_bytes={self.max_bytes}, pinned_bytes={self.max_pinned_bytes}, directory='{self.directory}'"

    def __repr__(self) -> str:
        return f"SpillingFeatureStore({self.extra_repr()})"
