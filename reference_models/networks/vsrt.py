"""VSR-Transformer (Cao, Li, Zhang, Van Gool, "Video Super-Resolution Transformer", arXiv:2106.06847, 2021).

The network is composed from vsrblocks: :class:`~vsrblocks.align.SPyNet` flows,
:class:`~vsrblocks.attention.STCSA` attention, :class:`~vsrblocks.align.BOFF` feed-forward,
residual blocks and a pixel-shuffle upsampler. :func:`from_official` turns a state_dict of the official
``vsrTransformer`` (caojiezhang/VSR-Transformer) into this model and reproduces its outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.align.boff import BOFF
from vsrblocks.align.spynet import IMAGENET_MEAN, IMAGENET_STD, SPyNet, bidirectional_flows
from vsrblocks.attention.stcsa import STCSA
from vsrblocks.checkpoint import CheckpointError, count_blocks, load_state_dict_checked
from vsrblocks.fused_conv import conv2d_activation
from vsrblocks.memory_format import to_memory_format
from vsrblocks.position import OfficialPositionEncoding3D, SinCosPositionEncoding3D
from vsrblocks.residual import ResidualBlockNoBN, make_layer
from vsrblocks.shapes import check_shape
from vsrblocks.upsample import PixelShuffleUpsampler

__all__ = [
    "VSRT",
    "VSRTLayer",
    "MODEL",
    "PRESETS",
    "from_official",
    "convert_official_state_dict",
    "official_config_from_state_dict",
]

NormKind = Literal["layer", "official"]
PosEncodingKind = Literal["paper", "official"]


def _frame_norm(kind: str, channels: int, feat_size: int) -> nn.Module:
    if kind == "layer":
        # One group = statistics over (C, H, W) of each frame, like LayerNorm([C, H, W]), with a
        # per-channel affine, so no parameter depends on the frame size.
        return nn.GroupNorm(1, channels, eps=1e-5)
    if kind == "official":
        return nn.LayerNorm([channels, feat_size, feat_size], eps=1e-5)
    raise ValueError(f"norm must be 'layer' or 'official', got {kind!r}")


def _apply_frame_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalise every frame of a ``(B, T, C, H, W)`` clip."""
    if isinstance(norm, nn.LayerNorm):
        size = tuple(norm.normalized_shape)
        if tuple(x.shape[-3:]) != size:
            raise ValueError(
                f"norm='official' is nn.LayerNorm{list(size)}: it only runs on (B, T, {size[0]}, {size[1]}, {size[2]}) "
                f"features, got {tuple(x.shape)}; use tile_size={size[1]} to run larger frames as tiles"
            )
        return norm(x)
    return norm(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class VSRTLayer(nn.Module):
    """One transformer layer of VSR-Transformer: ``h = h + STCSA(norm1(h))``, then ``h = h + BOFF(norm2(h))``.

    With ``STCSA(residual=True)`` (the official block) the first step adds ``norm1(h)`` twice over:
    once inside the attention block and once here (see :class:`~vsrblocks.attention.STCSA`).

    Args:
        channels: feature channels C.
        patch_size: of the :class:`~vsrblocks.attention.STCSA` block.
        num_heads: of the :class:`~vsrblocks.attention.STCSA` block.
        boff_blocks: residual blocks per :class:`~vsrblocks.align.BOFF` branch.
        norm: the frame normalisation, see :class:`VSRT`.
        feat_size: of the frame normalisation, see :class:`VSRT`.
        attn_residual: STCSA's internal residual (official quirk).

    Shape:
        - h: ``(B, T, C, H, W)``; lrs: ``(B, T, 3, H, W)``; flows: two ``(B, T, 2, H, W)``
        - Output: ``(B, T, C, H, W)``
    """

    def __init__(
        self,
        channels: int,
        patch_size: int = 8,
        num_heads: int = 1,
        boff_blocks: int = 30,
        norm: NormKind = "layer",
        feat_size: int = 64,
        attn_residual: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = _frame_norm(norm, channels, feat_size)
        self.attn = STCSA(channels, patch_size=patch_size, num_heads=num_heads, residual=attn_residual)
        self.norm2 = _frame_norm(norm, channels, feat_size)
        self.ff = BOFF(channels, num_blocks=boff_blocks)

    def forward(self, h: torch.Tensor, lrs: torch.Tensor, flows: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = h + self.attn(_apply_frame_norm(self.norm1, h))
        return h + self.ff(_apply_frame_norm(self.norm2, h), lrs, flows)


class VSRT(nn.Module):
    """VSR-Transformer: super-resolves every frame of a clip x4 with space-time attention and flow-guided
    feed-forward layers.

    Per frame ``conv_first`` + LeakyReLU(0.1) + ``num_extract_blocks`` residual blocks give features;
    SPyNet computes flows between neighbouring LR frames in both directions (always both, see official
    quirk 7 in the fixture notes); a 3-D position encoding is added; ``depth`` :class:`VSRTLayer` s
    (STCSA then BOFF, pre-norm, residual); ``num_reconstruct_blocks`` residual blocks; two
    conv + PixelShuffle(2) + LeakyReLU stages (``upsample``), ``lrelu(conv_hr)``, ``conv_last``; plus the
    bilinear x4 upsampling of each LR frame.

    **Normalisation** (``norm``). The official code uses ``nn.LayerNorm([C, 64, 64])``: per frame, statistics
    over (C, H, W) and an element-wise affine of shape (C, 64, 64), which ties the network to 64x64 LR
    inputs. ``norm="layer"`` (our presets) keeps the same statistics (one GroupNorm group = all of
    (C, H, W) per frame) with a per-channel affine, so it runs at any size. ``norm="official"`` keeps the
    (C, feat_size, feat_size) LayerNorm exactly; such a model runs at ``feat_size`` x ``feat_size`` only, or
    on any size with ``tile_size=feat_size``.

    **Position encoding** (``pos_encoding``). ``"paper"``: the paper's formula,
    :class:`~vsrblocks.SinCosPositionEncoding3D` with base ``pos_base``; ``"official"``: the encoding the
    official code actually adds (the ``positional_encodings`` 4.0.0 quirk, frame t receives one component
    of an encoding over (C, H, W)), which needs ``T == num_frames``.

    **Any size.** With ``norm="layer"`` no block needs padding: STCSA masks its own patch padding,
    SPyNet resizes internally, everything else is convolutional. With ``tile_size`` set, frames other than
    ``tile_size`` x ``tile_size`` run as overlapping tiles (the official test protocol: 64x64 LR tiles with
    16 px overlap); each output pixel is taken from the tile in which it lies furthest from the tile border
    (the overlap is split in its middle), i.e. at least ``tile_overlap // 2`` LR pixels inside the tile
    wherever the tile edge is not the frame edge. (Attention and normalisation see the whole tile, so tiled
    and untiled results differ; tiling is what lets the size-bound official model run at all.) Frames
    smaller than a tile are padded by edge replication (bottom/right) and the result cropped.

    Args:
        num_frames: frames per clip the model is built for (paper: 5 on REDS, 7 on Vimeo-90K). Only the
            official position encoding requires exactly this many; otherwise any ``T >= 1`` runs.
        channels: feature channels C (paper: 64).
        num_extract_blocks: residual blocks of the feature extractor (paper: 5).
        num_reconstruct_blocks: residual blocks before upsampling (paper: 30).
        depth: transformer layers (paper: 5 on REDS, 7 on Vimeo-90K).
        num_heads: STCSA heads (paper: 1).
        patch_size: STCSA patch side (paper: 8).
        boff_blocks: residual blocks per BOFF branch (paper and official code: 30).
        norm: ``"layer"`` or ``"official"``, see above.
        feat_size: LR frame side of the official LayerNorm (only used with ``norm="official"``).
        pos_encoding: ``"paper"`` or ``"official"``, see above.
        pos_base: base of the paper formula's frequencies (1000 in the paper).
        attn_residual: STCSA's internal residual (official quirk: the normalised input is added inside the
            block and the raw input again outside); keep ``True`` to match the official network.
        tile_size: run frames of other sizes as tiles of this LR side (``None``: whole frames).
        tile_overlap: overlap of neighbouring tiles in LR pixels.
        output_mode: ``"all"`` (every frame, the paper's setting) or ``"center"`` (frame ``T // 2``).
        spynet_pretrained: a SPyNet checkpoint (MMagic or BasicSR layout) to initialise the flow network
            from, as the official training does; ``None``: random SPyNet weights.
        spynet_channels: hidden widths of SPyNet's basic modules (the default is SPyNet's own; the ``tiny``
            preset uses a narrow SPyNet). With ``spynet_pretrained`` the file's widths are built instead.
        channels_last: run the features channels-last (NHWC), where oneDNN's convolutions need no layout
            reorders (VSRT's time is almost all 3x3 convolution); ``None``: on CPU, without autograd (a training
            step was no faster channels-last with AVX-512 and slower with AVX2 only; ``docs/benchmarks.md``).
            The result is the same up to float rounding (the convolutions sum in another order) and is
            returned contiguous.

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in ``[0, 1]``
        - Output: ``(B, T, 3, 4H, 4W)`` (``output_mode="all"``) or ``(B, 3, 4H, 4W)`` (``"center"``)

    Examples:
        >>> model = VSRT(**PRESETS["tiny"]).eval()
        >>> with torch.no_grad():
        ...     model(torch.rand(1, 3, 3, 13, 18)).shape
        torch.Size([1, 3, 3, 52, 72])
    """

    scale = 4

    def __init__(
        self,
        num_frames: int = 5,
        channels: int = 64,
        num_extract_blocks: int = 5,
        num_reconstruct_blocks: int = 30,
        depth: int = 5,
        num_heads: int = 1,
        patch_size: int = 8,
        boff_blocks: int = 30,
        norm: NormKind = "layer",
        feat_size: int = 64,
        pos_encoding: PosEncodingKind = "paper",
        pos_base: float = 1000.0,
        attn_residual: bool = True,
        tile_size: int | None = None,
        tile_overlap: int = 16,
        output_mode: Literal["all", "center"] = "all",
        spynet_pretrained: str | None = None,
        spynet_channels: tuple[int, ...] = (32, 64, 32, 16),
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if output_mode not in ("all", "center"):
            raise ValueError(f"output_mode must be 'all' or 'center', got {output_mode!r}")
        if pos_encoding not in ("paper", "official"):
            raise ValueError(f"pos_encoding must be 'paper' or 'official', got {pos_encoding!r}")
        if tile_size is not None and not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile_overlap must be in [0, tile_size={tile_size}), got {tile_overlap}")
        self.num_frames = num_frames
        self.channels = channels
        self.norm = norm
        self.pos_encoding_kind = pos_encoding
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.output_mode = output_mode
        self.channels_last = channels_last

        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.feature_extraction = make_layer(lambda: ResidualBlockNoBN(channels=channels), num_extract_blocks)
        self.spynet = (
            SPyNet(spynet_channels) if spynet_pretrained is None else SPyNet.from_checkpoint(spynet_pretrained)
        )
        if pos_encoding == "paper":
            self.pos_embedding: nn.Module = SinCosPositionEncoding3D(channels, base=pos_base)
        else:
            self.pos_embedding = OfficialPositionEncoding3D(num_frames)
        self.layers = nn.ModuleList(
            VSRTLayer(channels, patch_size, num_heads, boff_blocks, norm, feat_size, attn_residual)
            for _ in range(depth)
        )
        self.reconstruction = make_layer(lambda: ResidualBlockNoBN(channels=channels), num_reconstruct_blocks)
        self.upsample = PixelShuffleUpsampler(channels, scale=4, out_channels=None)
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = check_shape(x, "B T C H W", name="clip", C=3)
        if self.pos_encoding_kind == "official" and dims["T"] != self.num_frames:
            raise ValueError(
                f"clip: the official position encoding is built for T={self.num_frames} frames, got {tuple(x.shape)}"
            )
        if self.tile_size is not None and (dims["H"], dims["W"]) != (self.tile_size, self.tile_size):
            out = self._forward_tiled(x)
        else:
            out = self._forward_clip(x)
        return out[:, dims["T"] // 2] if self.output_mode == "center" else out

    def _forward_clip(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = x.device.type == "cpu" and not torch.is_grad_enabled()
        frames_flat = to_memory_format(
            x.flatten(0, 1), torch.channels_last if channels_last else torch.contiguous_format
        )
        features = self.feature_extraction(conv2d_activation(self.conv_first, frames_flat, "leaky_relu", 0.1))
        features = features.unflatten(0, (batch, frames))
        flows = bidirectional_flows(self.spynet, x)
        h = features + self.pos_embedding(features)
        for layer in self.layers:
            h = layer(h, x, flows)
        out = self.upsample(self.reconstruction(h.flatten(0, 1)))
        out = self.conv_last(conv2d_activation(self.conv_hr, out, "leaky_relu", 0.1))
        base = F.interpolate(frames_flat, scale_factor=4, mode="bilinear", align_corners=False)
        return (out + base).unflatten(0, (batch, frames)).contiguous()

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        tile, s = cast(int, self.tile_size), self.scale
        height, width = x.shape[-2:]
        pad_h, pad_w = max(tile - height, 0), max(tile - width, 0)
        if pad_h or pad_w:
            x = F.pad(x.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate").unflatten(0, x.shape[:2])
        rows = _tile_spans(height + pad_h, tile, self.tile_overlap)
        cols = _tile_spans(width + pad_w, tile, self.tile_overlap)
        out = x.new_empty(*x.shape[:3], s * (height + pad_h), s * (width + pad_w))
        for top, (own_top, own_bottom) in rows:
            for left, (own_left, own_right) in cols:
                piece = self._forward_clip(x[..., top : top + tile, left : left + tile])
                out[..., s * own_top : s * own_bottom, s * own_left : s * own_right] = piece[
                    ..., s * (own_top - top) : s * (own_bottom - top), s * (own_left - left) : s * (own_right - left)
                ]
        return out[..., : s * height, : s * width]

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, channels={self.channels}, depth={len(self.layers)}, norm={self.norm!r}, "
            f"pos_encoding={self.pos_encoding_kind!r}, tile_size={self.tile_size}, tile_overlap={self.tile_overlap}, "
            f"output_mode={self.output_mode!r}"
        )


def _tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, tuple[int, int]]]:
    """Tile starts along one axis (stride ``tile - overlap``, the last tile flush with the end) and the
    span ``[own_start, own_end)`` each tile writes: neighbouring tiles split their overlap in the middle."""
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    bounds = [0] + [(nxt + cur + tile) // 2 for cur, nxt in zip(starts, starts[1:])] + [size]
    return [(start, (bounds[i], bounds[i + 1])) for i, start in enumerate(starts)]


MODEL = VSRT

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's REDS configuration (5 frames, depth 5, C = 64).
    "paper": dict(num_frames=5, channels=64, num_extract_blocks=5, num_reconstruct_blocks=30, depth=5),
    "paper-reds": dict(num_frames=5, channels=64, num_extract_blocks=5, num_reconstruct_blocks=30, depth=5),
    # Vimeo-90K configuration: 7 frames, depth 7.
    "paper-vimeo": dict(num_frames=7, channels=64, num_extract_blocks=5, num_reconstruct_blocks=30, depth=7),
    "tiny": dict(
        num_frames=3,
        channels=16,
        num_extract_blocks=1,
        num_reconstruct_blocks=1,
        depth=1,
        patch_size=4,
        boff_blocks=2,
        spynet_channels=(8, 16, 8, 4),
    ),
}

_OFFICIAL_RENAMES = (
    (re.compile(r"^spynet\.spynet\."), "spynet."),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.norm\."), r"layers.\1.norm1."),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.fn\."), r"layers.\1.attn."),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.fn\.norm\."), r"layers.\1.norm2."),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.fn\.fn\."), r"layers.\1.ff."),
    (re.compile(r"^upconv1\."), "upsample.stages.0.conv."),
    (re.compile(r"^upconv2\."), "upsample.stages.1.conv."),
)
_POS_KEY = "pos_embedding.penc.inv_freq"


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], num_frames: int) -> dict[str, torch.Tensor]:
    """Rename an official ``vsrTransformer`` state_dict to :class:`VSRT` keys.

    ``transformer.layers.{k}.0.fn.norm`` -> ``layers.{k}.norm1``, ``.0.fn.fn`` -> ``layers.{k}.attn``,
    ``.1.fn.norm`` -> ``layers.{k}.norm2``, ``.1.fn.fn`` -> ``layers.{k}.ff``, ``upconv1/2`` ->
    ``upsample.stages.0/1.conv``, ``spynet.spynet.`` -> ``spynet.``. Three buffers are constants, checked and
    dropped: SPyNet's ImageNet ``mean``/``std`` and the position encoding's ``inv_freq`` (a function of
    ``num_frames``).

    Raises:
        CheckpointError: a constant buffer has an unexpected value.
    """
    constants = {
        "spynet.spynet.mean": torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        "spynet.spynet.std": torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    }
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in constants:
            if tuple(value.shape) != (1, 3, 1, 1) or not torch.allclose(value.float().cpu(), constants[key], atol=1e-3):
                raise CheckpointError(
                    f"{key}: expected the ImageNet constants {constants[key].flatten().tolist()}, "
                    f"got {value.flatten().tolist()}"
                )
            continue
        if key == _POS_KEY:
            expected = OfficialPositionEncoding3D(num_frames).inv_freq()
            if tuple(value.shape) != tuple(expected.shape) or not torch.allclose(
                value.float().cpu(), expected, rtol=1e-6
            ):
                raise CheckpointError(
                    f"{_POS_KEY}: expected {expected.tolist()} for num_frame={num_frames}, got {value.flatten().tolist()}"
                )
            continue
        for pattern, replacement in _OFFICIAL_RENAMES:
            key, count = pattern.subn(replacement, key)
            if count:
                break
        converted[key] = value
    return converted


def from_official(
    state_dict: Mapping[str, Any],
    *,
    image_ch: int,
    num_feat: int,
    feat_size: int,
    num_frame: int,
    num_extract_block: int,
    num_reconstruct_block: int,
    depth: int,
    heads: int,
    patch_size: int,
    spynet_pretrained: str | None = None,
) -> VSRT:
    """Build a :class:`VSRT` from the official ``vsrTransformer`` constructor arguments and its state_dict.

    The model keeps everything official: the (C, 64, 64) LayerNorm, the ``positional_encodings`` quirk, the
    STCSA internal residual, 30 residual blocks per BOFF branch. It reproduces the official outputs at
    64x64 LR frames and runs other sizes as overlapping 64x64 tiles (16 px overlap, the official test
    protocol) instead of failing. Returned in eval mode.

    ``state_dict`` may be a BasicSR checkpoint dict (``{"params": ...}`` or ``{"params_ema": ...}``, EMA
    weights preferred) with or without ``module.`` prefixes. ``spynet_pretrained`` (a SPyNet file path in the
    official code) is only read when ``state_dict`` has no SPyNet weights; an official checkpoint carries them.
    The arguments are the official ``vsrTransformer`` keyword arguments; the paper's REDS model is
    ``num_feat=64, num_frame=5, num_extract_block=5, num_reconstruct_block=30, depth=5, heads=1, patch_size=8``
    (32,564,335 parameters, the paper's ~32.6 M).

    Raises:
        ValueError: arguments the official network cannot have (``image_ch != 3``, ``feat_size != 64``).
        CheckpointError: (a ValueError) the state_dict does not fit; the message names the keys.
    """
    if image_ch != 3:
        raise ValueError(f"image_ch must be 3 (SPyNet and the bilinear base are RGB), got {image_ch}")
    if feat_size != 64:
        raise ValueError(f"feat_size must be 64: the official attention hard-codes 64x64 LR frames, got {feat_size}")
    kwargs: dict[str, Any] = {
        "num_frames": num_frame,
        "channels": num_feat,
        "num_extract_blocks": num_extract_block,
        "num_reconstruct_blocks": num_reconstruct_block,
        "depth": depth,
        "num_heads": heads,
        "patch_size": patch_size,
        "boff_blocks": 30,
        "norm": "official",
        "feat_size": feat_size,
        "pos_encoding": "official",
        "tile_size": feat_size,
        "tile_overlap": 16,
    }
    model = VSRT(**kwargs)
    # a checkpoint saved from this model rebuilds it with create_model("vsrt", "paper", **kwargs)
    model.model_spec = {"name": "vsrt", "preset": "paper", "overrides": kwargs}  # type: ignore[assignment]
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    converted = convert_official_state_dict(state_dict, num_frame)
    if spynet_pretrained is not None and not any(k.startswith("spynet.") for k in converted):
        spynet = SPyNet.from_checkpoint(spynet_pretrained)
        converted.update({f"spynet.{k}": v for k, v in spynet.state_dict().items()})
    load_state_dict_checked(model, converted, what="official vsrTransformer state_dict")
    return model.eval()


#: What an official state_dict cannot tell: the paper's values (REDS model: 5 frames, one head, 8x8 patches).
_OFFICIAL_ASSUMED = {"heads": 1, "patch_size": 8}
#: ``inv_freq`` has ``ceil(T / 6)`` entries; each length stands for a range of frame counts, of which the
#: paper trained 5 (REDS) and 7 (Vimeo-90K).
_PAPER_FRAMES_BY_INV_FREQ = {1: 5, 2: 7}


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The official ``vsrTransformer`` keyword arguments an official state_dict was made with, read from its
    weights.

    Determined by the weights: ``num_feat`` and ``image_ch`` (``conv_first``), ``num_extract_block``,
    ``num_reconstruct_block`` and ``depth`` (counted), ``feat_size`` (the ``(C, 64, 64)`` LayerNorm: the
    official norm). Not determined: ``heads`` and ``patch_size`` (no weight depends on them) take the paper's
    1 and 8; ``num_frame`` is only known up to ``ceil(T / 6)`` (the length of ``inv_freq``) and takes the
    paper's 5 (one entry) or 7 (two entries).

    Returns:
        ``(config, assumed)``: keyword arguments for :func:`from_official`, and the names of those taken
        from the paper rather than the weights.

    Raises:
        ValueError: the state_dict is not an official VSR-Transformer one.
    """
    for key in ("conv_first.weight", _POS_KEY):
        if key not in state_dict:
            raise ValueError(f"not an official VSR-Transformer state_dict: no {key!r}")
    if not any(key.startswith("spynet.spynet.") for key in state_dict):
        # our own VSRT (norm="official") shares the position key but names its flow network "spynet."
        raise ValueError("not an official VSR-Transformer state_dict: no 'spynet.spynet.' weights")
    conv_first = state_dict["conv_first.weight"]
    layer_keys = [k for k in state_dict if re.fullmatch(r"transformer\.layers\.\d+\.0\.fn\.norm\.weight", k)]
    feat_size = int(state_dict[layer_keys[0]].shape[-1]) if layer_keys else 64
    frames = _PAPER_FRAMES_BY_INV_FREQ.get(int(state_dict[_POS_KEY].numel()), 6 * int(state_dict[_POS_KEY].numel()) - 5)
    config = {
        "image_ch": int(conv_first.shape[1]),
        "num_feat": int(conv_first.shape[0]),
        "feat_size": feat_size,
        "num_frame": frames,
        "num_extract_block": count_blocks(state_dict, "feature_extraction"),
        "num_reconstruct_block": count_blocks(state_dict, "reconstruction"),
        "depth": len(layer_keys),
        **_OFFICIAL_ASSUMED,
    }
    return config, ("num_frame", *_OFFICIAL_ASSUMED)
