"""Where recurrent propagation keeps the per-frame features of its sweeps between one sweep and the next.

Bidirectional propagation (BasicVSR, IconVSR, BasicVSR++) needs every frame's features of a sweep until a
later sweep has read them, so memory grows with the video's length. The propagation blocks of
:mod:`vsrblocks.recurrent.propagation` therefore never hold those features themselves: they ``put`` each
branch's output for frame ``i`` under the branch's name, ``get`` it back when a later sweep reaches frame
``i``, and ``discard`` it as soon as nothing will read it again. :class:`FeatureStore` keeps everything in
memory (the plain whole-clip forward); a subclass that spills to disk or to pinned CPU memory bounds the
memory of a video of any length without changing the maths.
"""

from __future__ import annotations

import torch

__all__ = ["FeatureStore"]


class FeatureStore:
    """In-memory store of per-frame feature maps, addressed by ``(key, frame index)``.

    The interface (``put``, ``get``, ``discard``, ``clear``) is what the propagation blocks use; subclasses
    may keep the tensors anywhere (a disk spill, pinned memory) as long as ``get`` returns an equal tensor
    on the device and in the dtype it was ``put`` with. The in-memory store keeps autograd graphs (training runs
    through it); a store that spills is for inference.

    Keys used by the propagation blocks: the branch names (``"backward"``, ``"forward"``,
    ``"backward_1"``, ...), ``"spatial"`` (BasicVSR++'s per-frame features) and ``"flows_backward"`` /
    ``"flows_forward"`` (flows that more than one sweep reads).

    Examples:
        >>> store = FeatureStore()
        >>> store.put("backward", 3, torch.ones(1, 2, 4, 4))
        >>> store.get("backward", 3).shape
        torch.Size([1, 2, 4, 4])
        >>> store.discard("backward", 3)
        >>> len(store)
        0
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], torch.Tensor] = {}

    def put(self, key: str, index: int, value: torch.Tensor) -> None:
        """Keep ``value`` as frame ``index`` of ``key`` (replacing what was there)."""
        self._items[(key, index)] = value

    def get(self, key: str, index: int) -> torch.Tensor:
        """The tensor put as frame ``index`` of ``key``.

        Raises:
            KeyError: nothing is stored there (never put, or discarded already).
        """
        try:
            return self._items[(key, index)]
        except KeyError:
            raise KeyError(f"FeatureStore: no features stored for {key!r} at frame {index}") from None

    def discard(self, key: str, index: int) -> None:
        """Forget frame ``index`` of ``key`` (nothing happens if it is not stored)."""
        self._items.pop((key, index), None)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
