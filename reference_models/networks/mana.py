"""MANA: Memory-Augmented Non-Local Attention for video super-resolution.

Yu, Liu, Bo, Mei, "Memory-Augmented Non-Local Attention for Video Super-Resolution", CVPR 2022;
official code jiy173/MANA (``models.py``, class ``mana``).

Seven LR frames -> per-frame encoder -> the MANA block (:class:`vsrblocks.attention.MANAAttention`: Gaussian
cross-frame non-local attention of the centre frame over all frames + a learned memory bank) -> decoder ->
x4 sub-pixel head + bilinear base. Output: the centre frame, x4.

Differences from the official code (numerically the same computation wherever the official code runs):

- any LR size: the official model stores the ``(HW x HW)`` distance matrix ``D`` as a parameter built for
  the training size and materialises ``T * (HW)^2`` attention weights; here the Gaussian comes from
  coordinates and the attention runs in query chunks (bounded memory in forward and backward);
- ``forward`` returns the SR frame only; the memory loss of the last call is ``model.last_memory_loss``;
- ``num_frames``, the GroupNorm groups and the HR-head width are arguments (official: 7, 32, 64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.attention.memory import MANAAttention
from vsrblocks.checkpoint import count_blocks, load_state_dict_checked
from vsrblocks.residual import ResidualBlockNoBN, make_layer
from vsrblocks.shapes import check_shape

__all__ = ["MANA", "MODEL", "PRESETS", "from_official", "official_config_from_state_dict", "official_key_map"]


class MANA(nn.Module):
    """The MANA network (official ``mana``), x4, centre-frame output.

    1. ``base = bilinear x4 (centre frame)``;
    2. per frame: ``lrelu(conv_first)`` then ``encoder_blocks`` residual blocks ``f + conv2(relu(conv1(f)))``;
    3. :class:`~vsrblocks.attention.MANAAttention` over the clip of features -> ``z`` and the memory loss;
    4. ``decoder_blocks`` residual blocks on ``z``;
    5. ``lrelu(pixel_shuffle2(upconv1))`` (C -> 4C), ``lrelu(pixel_shuffle2(upconv2))`` (C -> 4 * hr_channels),
       ``lrelu(conv_hr)``, ``conv_last`` (-> 3), ``+ base``. LeakyReLU slope 0.1.

    ``forward`` returns the SR centre frame; the memory loss (official ``qloss``, ``mean |query - read|``) of
    the last forward pass is kept in :attr:`last_memory_loss` (a 0-dim tensor with its autograd graph, to be
    added to the training loss).

    Args:
        channels: feature channels C (paper 128); must be divisible by ``num_groups``.
        encoder_blocks: residual blocks per frame before the attention (paper 5).
        decoder_blocks: residual blocks after the attention (paper 40).
        memory_size: memory-bank slots (paper 512; official checkpoints 256).
        num_frames: input frames (paper 7); the centre frame ``num_frames // 2`` is super-resolved.
        num_groups: GroupNorm groups in the attention block (official 32).
        init_sigma: initial Gaussian width (LR pixels) of the cross-frame attention.
        chunk_size: attention option, see :class:`~vsrblocks.attention.GaussianCrossFrameAttention` (default:
            automatic chunks).
        window_sigmas: attention option, as ``chunk_size`` (default: exact, no truncation).
        window_radius: attention option, as ``chunk_size``.
        checkpoint: attention option, as ``chunk_size``.
        hr_channels: width of the HR head after the second pixel shuffle (official: hard-coded 64).
        zero_init: zero-initialise the attention output convs ``W_z`` / ``W_z1`` (paper).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], any ``H, W``
        - Output: ``(B, 3, 4H, 4W)``

    Examples:
        >>> model = MANA(**PRESETS["tiny"])
        >>> model(torch.rand(1, 7, 3, 10, 13)).shape
        torch.Size([1, 3, 40, 52])
        >>> model.last_memory_loss.shape
        torch.Size([])
    """

    scale = 4
    output_mode = "center"

    def __init__(
        self,
        channels: int = 128,
        encoder_blocks: int = 5,
        decoder_blocks: int = 40,
        memory_size: int = 512,
        num_frames: int = 7,
        num_groups: int = 32,
        init_sigma: float = 4.0,
        chunk_size: int | None = None,
        window_sigmas: float | None = None,
        window_radius: float | None = None,
        checkpoint: bool = True,
        hr_channels: int = 64,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.channels = channels
        self.num_frames = num_frames
        self.center_index = num_frames // 2
        self.hr_channels = hr_channels
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.encoder = make_layer(lambda: ResidualBlockNoBN(channels), encoder_blocks)
        self.attention = MANAAttention(
            channels,
            num_frames=num_frames,
            memory_size=memory_size,
            num_groups=num_groups,
            init_sigma=init_sigma,
            chunk_size=chunk_size,
            window_sigmas=window_sigmas,
            window_radius=window_radius,
            center_index=self.center_index,
            zero_init=zero_init,
            checkpoint=checkpoint,
        )
        self.decoder = make_layer(lambda: ResidualBlockNoBN(channels), decoder_blocks)
        self.upconv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.upconv2 = nn.Conv2d(channels, 4 * hr_channels, 3, padding=1)
        self.conv_hr = nn.Conv2d(hr_channels, hr_channels, 3, padding=1)
        self.conv_last = nn.Conv2d(hr_channels, 3, 3, padding=1)
        self.last_memory_loss: torch.Tensor | None = None

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        dims = check_shape(clip, "B T C H W", name="clip", T=self.num_frames, C=3)
        b, t = dims["B"], dims["T"]
        base = F.interpolate(clip[:, self.center_index], scale_factor=4, mode="bilinear", align_corners=False)
        feat = F.leaky_relu(self.conv_first(clip.flatten(0, 1)), 0.1)
        feat = self.encoder(feat).unflatten(0, (b, t))
        z, memory_loss = self.attention(feat)
        if not torch.compiler.is_exporting():  # an exported program has no attributes to set
            self.last_memory_loss = memory_loss
        out = self.decoder(z)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv1(out), 2), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv2(out), 2), 0.1)
        out = F.leaky_relu(self.conv_hr(out), 0.1)
        return self.conv_last(out) + base

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, scale={self.scale}, output_mode={self.output_mode!r}"


MODEL = MANA

PRESETS: dict[str, dict] = {
    # Paper / official training config: C=128, 5 encoder and 40 decoder blocks, 512 memory slots, 7 frames.
    "paper": {"channels": 128, "encoder_blocks": 5, "decoder_blocks": 40, "memory_size": 512, "num_frames": 7},
    # Same topology, small: C=32 (32 GroupNorm groups of 1 channel), 1 + 2 blocks, 64 slots.
    "tiny": {"channels": 32, "encoder_blocks": 1, "decoder_blocks": 2, "memory_size": 64, "num_frames": 7},
}

#: Official ``nonloc_spatial.<name>`` -> our ``attention.<submodule>.<name>``.
_ATTENTION_KEYS = {
    "norm": "attention.cross.norm",
    "g": "attention.cross.g",
    "theta": "attention.cross.theta",
    "phi": "attention.cross.phi",
    "W_z": "attention.cross.W_z",
    "std": "attention.cross.std",
    "mb": "attention.memory.mb",
    "W_z1": "attention.memory.W_z1",
}


def official_key_map(key: str) -> str | None:
    """Our state_dict key for an official MANA key (``None`` for the dropped ``nonloc_spatial.D``).

    Examples:
        >>> official_key_map("nonloc_spatial.theta.weight")
        'attention.cross.theta.weight'
        >>> official_key_map("decoder.3.conv1.bias")
        'decoder.3.conv1.bias'
        >>> official_key_map("nonloc_spatial.D") is None
        True
    """
    if key == "nonloc_spatial.D":
        return None
    if key.startswith("nonloc_spatial."):
        head, _, rest = key[len("nonloc_spatial.") :].partition(".")
        if head in _ATTENTION_KEYS:
            return _ATTENTION_KEYS[head] + ("." + rest if rest else "")
        raise ValueError(f"unknown official MANA key {key!r}")
    return key


def _distance_matrix(height: int, width: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack((xs.flatten(), ys.flatten()), dim=1).to(torch.float64)
    return torch.cdist(pos, pos) ** 2


def from_official(
    state_dict: Mapping[str, torch.Tensor],
    in_channels: int,
    encoder_nblocks: int,
    decoder_nblocks: int,
    width: int,
    height: int,
) -> MANA:
    """Build :class:`MANA` from an official ``mana`` state_dict and its config-dict values.

    The official ``nonloc_spatial.D`` (the ``(HW x HW)`` squared pixel distances for the training size
    ``width x height``) is checked against that geometry and **dropped**: the Gaussian is rebuilt from
    coordinates for whatever size the model is run at. The number of memory slots is read from
    ``nonloc_spatial.mb`` (official checkpoints: 256). The returned model (eval mode) reproduces the
    official outputs and runs at any size.

    Raises:
        ValueError: keys or shapes that do not fit the config, or a ``D`` that is not the distance matrix of
            ``height x width`` (:class:`vsrblocks.checkpoint.CheckpointError` is a ``ValueError``).
    """
    if "nonloc_spatial.mb" not in state_dict:
        raise ValueError("official MANA state_dict has no 'nonloc_spatial.mb' (memory bank)")
    if "nonloc_spatial.D" in state_dict:
        dist = state_dict["nonloc_spatial.D"]
        n = width * height
        if tuple(dist.shape) != (n, n):
            raise ValueError(
                f"nonloc_spatial.D has shape {tuple(dist.shape)}, expected ({n}, {n}) for width={width}, height={height}"
            )
        expected = _distance_matrix(height, width)
        if not torch.allclose(dist.detach().to("cpu", torch.float64), expected, atol=1e-3, rtol=0):
            raise ValueError(f"nonloc_spatial.D is not the squared-distance matrix of a {height}x{width} frame")
    converted = {}
    for key, value in state_dict.items():
        ours = official_key_map(key)
        if ours is not None:
            converted[ours] = value
    kwargs: dict[str, Any] = {
        "channels": in_channels,
        "encoder_blocks": encoder_nblocks,
        "decoder_blocks": decoder_nblocks,
        "memory_size": int(state_dict["nonloc_spatial.mb"].shape[1]),
        "num_frames": 7,
        "num_groups": 32,
        "zero_init": False,
    }
    model = MANA(**kwargs)
    load_state_dict_checked(model, converted, what="official MANA state_dict")
    # a checkpoint saved from this model rebuilds it with create_model("mana", "paper", **kwargs)
    model.model_spec = {"name": "mana", "preset": "paper", "overrides": kwargs}  # type: ignore[assignment]
    return model.eval()


#: The official training size (``width`` x ``height``) of the paper's checkpoints, for a file without ``D``.
_OFFICIAL_TRAINING_SIZE = {"width": 112, "height": 64}


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, int], tuple[str, ...]]:
    """The official ``mana`` config dict an official state_dict was made with, read from its weights.

    ``in_channels`` from ``conv_first``, ``encoder_nblocks`` / ``decoder_nblocks`` by counting blocks, the
    training size ``width`` x ``height`` from the distance matrix ``nonloc_spatial.D`` (its first row holds
    the squared distances from pixel (0, 0): ``1, 4, 9, ...`` along the first row of the frame, then ``1``
    at the start of the second). The memory slots are read by :func:`from_official` itself.

    Returns:
        ``(config, assumed)``: keyword arguments for :func:`from_official`, and the names of those the
        weights do not determine (the training size of a file without ``D``: the paper's 112 x 64).

    Raises:
        ValueError: the state_dict is not an official MANA one (no ``nonloc_spatial.mb`` or ``conv_first``).
    """
    for key in ("conv_first.weight", "nonloc_spatial.mb"):
        if key not in state_dict:
            raise ValueError(f"not an official MANA state_dict: no {key!r}")
    config = {
        "in_channels": int(state_dict["conv_first.weight"].shape[0]),
        "encoder_nblocks": count_blocks(state_dict, "encoder"),
        "decoder_nblocks": count_blocks(state_dict, "decoder"),
    }
    dist = state_dict.get("nonloc_spatial.D")
    if dist is None or dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        return {**config, **_OFFICIAL_TRAINING_SIZE}, tuple(_OFFICIAL_TRAINING_SIZE)
    first_row = dist[0].detach().to("cpu", torch.float64)
    n = first_row.numel()
    squares = torch.arange(n, dtype=torch.float64) ** 2
    off_row = (first_row != squares).nonzero()
    width = int(off_row[0]) if len(off_row) else n
    return {**config, "width": width, "height": n // width}, ()
