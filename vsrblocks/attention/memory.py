"""MANA's memory-augmented attention and the full MANA non-local block.

Yu, Liu, Bo, Mei, "Memory-Augmented Non-Local Attention for Video Super-Resolution", CVPR 2022
(MANA); the official block is ``nonlocal_attention`` in jiy173/MANA ``models.py``.

- :class:`MemoryAugmentedAttention`: queries read a learned, image-independent bank of ``N`` slots
  (``read = softmax(Q M / sqrt(Ci)) M^T``), with the memory loss ``mean |Q - read|``.
- :class:`MANAAttention`: the official ``nonlocal_attention`` block, composing
  :class:`~vsrblocks.attention.GaussianCrossFrameAttention` and :class:`MemoryAugmentedAttention` with one
  shared GroupNorm and query projection: ``z = W_z(cross-frame) + m[:, c] + W_z1(memory)``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.attention.gaussian_cross_frame import GaussianCrossFrameAttention
from vsrblocks.shapes import check_shape

__all__ = ["MemoryAugmentedAttention", "MANAAttention", "memory_read"]


def memory_read(query: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a memory bank: ``read = softmax(Q M / sqrt(Ci), over slots) M^T`` and ``loss = mean|Q - read|``.

    Every pixel's query ``Q`` (``Ci`` values) attends over the ``N`` slots (columns) of ``memory``
    ``(Ci, N)``; the keys and values are both the slots. The ``1/sqrt(Ci)`` scale **is** applied here
    (unlike MANA's cross-frame attention). The memory loss is the official ``qloss``: the mean absolute
    difference between the queries and their read-outs over all ``B * H * W * Ci`` elements, with
    gradients to both the queries and the bank (no stop-gradient). Runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (fused where available, linear memory in the
    number of pixels).

    Args:
        query: ``(B, Ci, H, W)``.
        memory: ``(Ci, N)`` bank.

    Returns:
        ``(read, loss)``: ``read`` ``(B, Ci, H, W)`` and the 0-dim loss.

    Examples:
        >>> read, loss = memory_read(torch.randn(2, 8, 5, 6), torch.randn(8, 32))
        >>> read.shape, loss.shape
        (torch.Size([2, 8, 5, 6]), torch.Size([]))
    """
    dims = check_shape(query, "B C H W", name="query")
    check_shape(memory, "C N", name="memory", C=dims["C"])
    b, ci, h = dims["B"], dims["C"], dims["H"]
    q = rearrange(query, "b c h w -> b (h w) c")
    slots = rearrange(memory, "c n -> n c").to(q.dtype)  # the slots are both keys and values
    kv = slots.expand(b, *slots.shape)
    read = F.scaled_dot_product_attention(q, kv, kv, scale=ci**-0.5)  # (B, HW, Ci)
    # the mean written out so that an empty batch gives a loss of 0 instead of NaN
    loss = torch.abs(q - read).sum() / max(q.numel(), 1)
    return rearrange(read, "b (h w) c -> b c h w", h=h), loss


class MemoryAugmentedAttention(nn.Module):
    """MANA's memory-augmented attention: a frame's queries read a learned bank of ``memory_size`` slots.

    ``query = phi(norm(x))`` (GroupNorm, then a 1x1 conv ``C -> Ci``), ``read = softmax(Q M / sqrt(Ci)) M^T``
    with the learned bank ``mb`` ``(Ci, memory_size)``, output ``W_z1(read)`` (1x1 conv ``Ci -> C``,
    zero-initialised by default). ``forward`` returns ``(out, memory_loss)`` where ``memory_loss`` is the
    official ``qloss`` = ``mean |query - read|`` (add it to the training loss with a weight of your
    choice; it pulls the slots towards the queries and the queries towards the bank). The residual is
    **not** added.

    **Sharing the query with the cross-frame attention (MANA).** The official block computes the
    normalisation and the query once and uses them for both attentions. With ``project_query=False``
    this block has no ``norm``/``phi`` and ``forward`` takes the query ``(B, Ci, H, W)`` directly;
    :class:`MANAAttention` builds it that way. With ``project_query=True`` (default) it works alone on
    a frame ``(B, C, H, W)``.

    Parameter names match the official checkpoint (``mb``, ``W_z1``; ``norm``/``phi`` when present).
    The bank is initialised from N(0, 1) (the official code also keeps its bank as a free parameter;
    its pretrained bank has 256 slots, the paper's default here is 512 -- any size loads).

    Args:
        channels: feature channels C.
        memory_size: number of slots N (paper: 512; official checkpoints: 256).
        inter_channels: query/slot width Ci (default ``channels // 2``).
        num_groups: GroupNorm groups (official 32); must divide ``channels``.
        eps: GroupNorm epsilon (official 1e-6).
        project_query: own ``norm`` + ``phi`` and take frames (True) or take ready queries (False).
        zero_init: zero-initialise ``W_z1``.

    Shape:
        - Input: ``(B, C, H, W)`` (``project_query=True``) or ``(B, Ci, H, W)`` (``False``)
        - Output: ``((B, C, H, W), ())``

    Examples:
        >>> block = MemoryAugmentedAttention(channels=16, memory_size=32, num_groups=4)
        >>> out, loss = block(torch.randn(2, 16, 9, 7))
        >>> out.shape, loss.shape
        (torch.Size([2, 16, 9, 7]), torch.Size([]))
    """

    def __init__(
        self,
        channels: int,
        memory_size: int = 512,
        inter_channels: int | None = None,
        num_groups: int = 32,
        eps: float = 1e-6,
        project_query: bool = True,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        inter_channels = channels // 2 if inter_channels is None else inter_channels
        if channels < 1 or inter_channels < 1:
            raise ValueError(f"channels and inter_channels must be >= 1, got {channels} and {inter_channels}")
        if memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {memory_size}")
        if project_query and (num_groups < 1 or channels % num_groups != 0):
            raise ValueError(f"num_groups must be >= 1 and divide channels={channels}, got {num_groups}")
        self.channels = channels
        self.memory_size = memory_size
        self.inter_channels = inter_channels
        self.num_groups = num_groups
        self.project_query = project_query
        self.zero_init = zero_init
        if project_query:
            self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
            self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.mb = nn.Parameter(torch.empty(inter_channels, memory_size))
        self.W_z1 = nn.Conv2d(inter_channels, channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.project_query:
            self.norm.reset_parameters()
            self.phi.reset_parameters()
        nn.init.normal_(self.mb)
        self.W_z1.reset_parameters()
        if self.zero_init:
            nn.init.zeros_(self.W_z1.weight)
            nn.init.zeros_(cast(torch.Tensor, self.W_z1.bias))

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(norm(x))``: ``(B, C, H, W) -> (B, Ci, H, W)`` (only with ``project_query=True``)."""
        if not self.project_query:
            raise RuntimeError("this block was built with project_query=False: pass the query to forward/read")
        check_shape(x, "B C H W", name="frame", C=self.channels)
        return cast(torch.Tensor, self.phi(self.norm(x)))

    def read(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory read-out (input of ``W_z1``) and memory loss for queries ``(B, Ci, H, W)``."""
        check_shape(query, "B C H W", name="query", C=self.inter_channels)
        return memory_read(query, self.mb)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.query(x) if self.project_query else x
        read, loss = self.read(query)
        return self.W_z1(read), loss

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, memory_size={self.memory_size}, inter_channels={self.inter_channels}, "
            f"project_query={self.project_query}"
        )


class MANAAttention(nn.Module):
    """The MANA non-local block (official ``nonlocal_attention``): cross-frame + memory attention.

    For a clip ``m`` ``(B, T, C, H, W)`` with centre frame ``c``:

    - ``normed = GroupNorm(m_t)`` per frame and ``query = phi(normed_c)``, computed **once** and shared
      (``cross.norm``, ``cross.phi``);
    - ``W_y = cross.W_z(read-outs of the Gaussian cross-frame attention)``
      (:class:`~vsrblocks.attention.GaussianCrossFrameAttention`);
    - ``mem_read, memory_loss = memory.read(query)``; ``W_y1 = memory.W_z1(mem_read)``
      (:class:`MemoryAugmentedAttention` with ``project_query=False``);
    - ``z = W_y + m[:, c] + W_y1`` -- the skip adds the **un-normalised** centre frame.

    ``forward`` returns ``(z, memory_loss)``. With the default zero-initialised ``W_z``/``W_z1`` a fresh
    block is the identity on the centre frame. Submodule ``cross`` holds ``norm, g, theta, phi, W_z,
    std``, submodule ``memory`` holds ``mb, W_z1``: the official ``nonloc_spatial.<name>`` keys map to
    ``cross.<name>`` / ``memory.<name>`` (``D`` is dropped, see
    :func:`reference_models.networks.mana.from_official`).

    Args:
        channels: feature channels C.
        num_frames: frames T (official: 7).
        memory_size: memory slots (paper: 512, official checkpoints: 256).
        inter_channels: Ci (default ``channels // 2``).
        num_groups: GroupNorm groups (official 32).
        init_sigma: initial Gaussian width in pixels.
        chunk_size: see :class:`~vsrblocks.attention.GaussianCrossFrameAttention`.
        window_sigmas: see :class:`~vsrblocks.attention.GaussianCrossFrameAttention`.
        window_radius: see :class:`~vsrblocks.attention.GaussianCrossFrameAttention`.
        checkpoint: see :class:`~vsrblocks.attention.GaussianCrossFrameAttention`.
        center_index: query frame (default ``num_frames // 2``).
        eps: GroupNorm epsilon.
        zero_init: zero-initialise ``W_z`` and ``W_z1``.

    Shape:
        - Input: ``(B, T, C, H, W)``
        - Output: ``((B, C, H, W), ())``

    Examples:
        >>> block = MANAAttention(channels=16, num_frames=3, memory_size=32, num_groups=4)
        >>> clip = torch.randn(2, 3, 16, 9, 7)
        >>> z, loss = block(clip)
        >>> torch.equal(z, clip[:, 1])   # zero-initialised output convs: identity at initialisation
        True
    """

    def __init__(
        self,
        channels: int,
        num_frames: int = 7,
        memory_size: int = 512,
        inter_channels: int | None = None,
        num_groups: int = 32,
        init_sigma: float = 4.0,
        chunk_size: int | None = None,
        window_sigmas: float | None = None,
        window_radius: float | None = None,
        center_index: int | None = None,
        eps: float = 1e-6,
        zero_init: bool = True,
        checkpoint: bool = True,
    ) -> None:
        super().__init__()
        self.cross = GaussianCrossFrameAttention(
            channels,
            num_frames,
            inter_channels=inter_channels,
            num_groups=num_groups,
            init_sigma=init_sigma,
            chunk_size=chunk_size,
            window_sigmas=window_sigmas,
            window_radius=window_radius,
            center_index=center_index,
            eps=eps,
            zero_init=zero_init,
            checkpoint=checkpoint,
        )
        self.memory = MemoryAugmentedAttention(
            channels,
            memory_size,
            inter_channels=self.cross.inter_channels,
            num_groups=num_groups,
            eps=eps,
            project_query=False,
            zero_init=zero_init,
        )
        self.channels = channels
        self.num_frames = num_frames
        self.center_index = self.cross.center_index

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.cross.normalize(clip)
        query = self.cross.phi(normed[:, self.center_index])
        w_y = self.cross.W_z(self.cross.attend(normed, query))
        mem_read, memory_loss = self.memory.read(query)
        w_y1 = self.memory.W_z1(mem_read)
        return w_y + clip[:, self.center_index] + w_y1, memory_loss

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_frames={self.num_frames}, center_index={self.center_index}"
