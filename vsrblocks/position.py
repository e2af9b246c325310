"""3-D sine-cosine position encodings for clips: the VSR-Transformer paper's formula and the official code's variant."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["SinCosPositionEncoding3D", "OfficialPositionEncoding3D", "sincos_position_encoding_3d"]

_CACHE_SIZE = 8


def _axis_channels(channels: int) -> tuple[int, int, int]:
    """Split ``channels`` over (t, h, w) as evenly as possible, the larger groups first."""
    return tuple(channels // 3 + (1 if axis < channels % 3 else 0) for axis in range(3))  # type: ignore[return-value]


def sincos_position_encoding_3d(
    channels: int,
    frames: int,
    height: int,
    width: int,
    base: float = 1000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The VSR-Transformer paper's 3-D sine-cosine encoding (Cao et al. 2021, Sec. 3.2), shape ``(T, C, H, W)``.

    The channels are cut into three consecutive groups for the frame index t, the row h and the
    column w (in that order). In a group of ``d`` channels, channel ``2k`` holds ``sin(pos * a_k)`` and
    channel ``2k + 1`` holds ``cos(pos * a_k)`` with ``a_k = 1 / base ** (2k / d)``, ``pos`` the integer
    position along that group's axis, starting at 0. With ``channels = 3d`` this is the paper's
    ``a_k = 1 / base ** (2k / (channels / 3))``. When ``channels`` is not a multiple of 3, the groups
    get ``channels // 3`` channels plus one each for the first ``channels % 3`` axes (t, then h);
    a group of odd size ends with an unpaired sine.

    Examples:
        >>> pe = sincos_position_encoding_3d(6, frames=2, height=3, width=4)
        >>> pe.shape
        torch.Size([2, 6, 3, 4])
        >>> [round(v, 4) for v in pe[1, :2, 0, 0].tolist()]  # t = 1, a_0 = 1: [sin 1, cos 1]
        [0.8415, 0.5403]
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    sizes = (frames, height, width)
    groups = []
    for axis, depth in enumerate(_axis_channels(channels)):
        if depth == 0:
            continue
        index = torch.arange(depth, device=device, dtype=torch.float32)
        freq = base ** (-2.0 * torch.div(index, 2, rounding_mode="floor") / depth)  # a_k for channel 2k and 2k+1
        angle = torch.arange(sizes[axis], device=device, dtype=torch.float32)[:, None] * freq  # (size, depth)
        values = torch.where(index.remainder(2) == 0, torch.sin(angle), torch.cos(angle))
        if axis == 0:
            values = values.view(frames, depth, 1, 1)
        else:
            values = values.t().reshape(1, depth, height, 1) if axis == 1 else values.t().reshape(1, depth, 1, width)
        groups.append(values.expand(frames, depth, height, width))
    return torch.cat(groups, dim=1).to(dtype)


class _CachedEncoding(nn.Module, ABC):
    """Caches the encoding per (T, C, H, W, device, dtype); no size-dependent state is stored in the module."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    @abstractmethod
    def _build(
        self, frames: int, channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """The ``(T, C, H, W)`` encoding of one size."""

    def _encoding(self, clip: torch.Tensor) -> torch.Tensor:
        """The encoding for ``clip`` (B, T, C, H, W), broadcast over the batch."""
        batch, frames, channels, height, width = clip.shape
        dtype = clip.dtype if clip.is_floating_point() else torch.get_default_dtype()
        key = (frames, channels, height, width, clip.device, dtype)
        if torch.compiler.is_compiling():
            return self._build(*key).unsqueeze(0).expand(batch, -1, -1, -1, -1)
        cached = self._cache.get(key)
        if cached is None:
            # A normal tensor even when first built under inference_mode, so later training steps may use it.
            with torch.inference_mode(False), torch.no_grad():
                cached = self._build(*key)
            self._cache[key] = cached
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached.unsqueeze(0).expand(batch, -1, -1, -1, -1)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        self._cache.clear()  # .to()/.half(): entries are rebuilt on the new device/dtype
        return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]


class SinCosPositionEncoding3D(_CachedEncoding):
    """The VSR-Transformer paper's 3-D sine-cosine position encoding, returned to be added to a clip.

    ``PE(pos, 2k) = sin(pos * a_k)``, ``PE(pos, 2k + 1) = cos(pos * a_k)``,
    ``a_k = 1 / base ** (2k / (C / 3))``, one third of the channels per axis: frame t, row h, column w
    (see :func:`sincos_position_encoding_3d` for channel counts not divisible by 3, or by 6).
    Works for any T, H, W; the encoding is cached per (T, H, W, device, dtype) and nothing
    size-dependent is stored in the state_dict.

    Args:
        channels: feature channels C.
        base: frequency base (the paper writes 1000; Transformer-style encodings use 10000).

    Shape:
        - Input: ``(B, T, C, H, W)`` (only its shape, device and dtype are used)
        - Output: ``(B, T, C, H, W)``, a read-only broadcast view over the batch; values in [-1, 1]

    Examples:
        >>> pe = SinCosPositionEncoding3D(channels=12)
        >>> clip = torch.zeros(2, 5, 12, 8, 9)
        >>> (clip + pe(clip)).shape
        torch.Size([2, 5, 12, 8, 9])
    """

    def __init__(self, channels: int, base: float = 1000.0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.base = base

    def _build(
        self, frames: int, channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return sincos_position_encoding_3d(channels, frames, height, width, self.base, device, dtype)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        check_shape(clip, "B T C H W", name="clip", C=self.channels)
        return self._encoding(clip)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, base={self.base}"


class OfficialPositionEncoding3D(_CachedEncoding):
    """The position encoding the official VSR-Transformer code adds (``positional_encodings`` 4.0.0's
    ``PositionalEncodingPermute3D(num_frames)`` applied to a ``(B, T, C, H, W)`` clip).

    That class treats T as its *encoding channel* axis and (C, H, W) as three spatial axes. With
    ``m = 2 * ceil(num_frames / 6)`` and ``inv_freq[k] = 1 / 10000 ** (2k / m)`` (float32), a position p
    has ``e(p) = [sin(p f_0), ..., sin(p f_{m/2-1}), cos(p f_0), ..., cos(p f_{m/2-1})]``; the vector at
    (c, h, w) is ``concat(e(c), e(h), e(w))`` and frame t receives its element t. So for ``T <= 6``
    frame t gets ``[sin c, cos c, sin h, cos h, sin w, cos w][t]``, and for ``T = 7``
    ``sin c, sin(c/100), cos c, cos(c/100), sin h, sin(h/100), cos h``. Later package versions interleave
    sin/cos and differ from T = 7 on; this class reproduces 4.0.0, which the official code imports.

    The official ``inv_freq`` buffer (key ``...penc.inv_freq`` or ``...inv_freq``) is a function of
    ``num_frames``: it is accepted by ``load_state_dict`` and checked, but not stored.

    Args:
        num_frames: the official ``num_frame``; clips may have up to ``3 * m`` frames (the official code
            only ever passes ``num_frames``).

    Shape:
        - Input: ``(B, T, C, H, W)`` (only its shape, device and dtype are used)
        - Output: ``(B, T, C, H, W)``, a read-only broadcast view over the batch

    Examples:
        >>> pe = OfficialPositionEncoding3D(num_frames=5)
        >>> out = pe(torch.zeros(1, 5, 4, 3, 3))
        >>> round(out[0, 4, 0, 0, 2].item(), 4)  # frame 4 holds sin(w), here w = 2
        0.9093
    """

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.encoding_channels = 2 * math.ceil(num_frames / 6)

    def inv_freq(self) -> torch.Tensor:
        """The official ``inv_freq`` buffer's value, ``(m / 2,)`` float32."""
        m = self.encoding_channels
        return 1.0 / (10000 ** (torch.arange(0, m, 2).float() / m))

    def _build(
        self, frames: int, channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        m = self.encoding_channels
        inv_freq = self.inv_freq().to(device)
        sizes = (channels, height, width)
        planes = []
        for t in range(frames):
            axis, component = divmod(t, m)
            fn = torch.sin if component < m // 2 else torch.cos
            positions = torch.arange(sizes[axis], device=device, dtype=torch.float32)
            values = fn(positions * inv_freq[component % (m // 2)])
            shape = [1, 1, 1]
            shape[axis] = sizes[axis]
            planes.append(values.view(shape).expand(channels, height, width))
        return torch.stack(planes).to(dtype)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        dims = check_shape(clip, "B T C H W", name="clip")
        if dims["T"] > 3 * self.encoding_channels:
            raise ValueError(
                f"clip: the official encoding for num_frames={self.num_frames} has {3 * self.encoding_channels} "
                f"components, one per frame; got T={dims['T']} in {tuple(clip.shape)}"
            )
        return self._encoding(clip)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        expected = self.inv_freq()
        for key in (prefix + "inv_freq", prefix + "penc.inv_freq"):
            value = state_dict.pop(key, None)
            if value is not None and (
                tuple(value.shape) != tuple(expected.shape)
                or not torch.allclose(value.float().cpu(), expected, rtol=1e-6)
            ):
                error_msgs.append(
                    f"{key}: expected {expected.tolist()} for num_frames={self.num_frames}, got {value.flatten().tolist()}"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}"
