"""Re-exports."""

from vsrblocks.attention.channel_attention import ChannelAttention
from vsrblocks.attention.channel_self_attention import ChannelSelfAttention, channel_self_attention
from vsrblocks.attention.dual_attention import DualAttention
from vsrblocks.attention.gaussian_cross_frame import GaussianCrossFrameAttention, gaussian_cross_frame_attention
from vsrblocks.attention.masked_self_attention import (
    AlignmentOutput,
    LeakyResidualBlock,
    MaskedSelfAttention,
    attention_map,
    local_attention,
    received_attention,
)
from vsrblocks.attention.memory import MANAAttention, MemoryAugmentedAttention, memory_read
from vsrblocks.attention.morphological_mask import (
    MorphologicalMask,
    closing,
    dilate,
    erode,
    make_footprint,
    morphological_gradient,
    opening,
    remove_small_holes,
    remove_small_objects,
)
from vsrblocks.attention.parallax_losses import (
    attention_warp,
    cycle_loss,
    parallax_losses,
    photometric_loss,
    smoothness_loss,
)
from vsrblocks.attention.position_attention import PositionAttention, position_attention
from vsrblocks.attention.spatial_attention import SpatialAttention
from vsrblocks.attention.stcsa import STCSA
from vsrblocks.attention.tsa import TSAFusion

__all__ = [
    "AlignmentOutput",
    "ChannelAttention",
    "ChannelSelfAttention",
    "DualAttention",
    "GaussianCrossFrameAttention",
    "LeakyResidualBlock",
    "MANAAttention",
    "MaskedSelfAttention",
    "MemoryAugmentedAttention",
    "MorphologicalMask",
    "PositionAttention",
    "STCSA",
    "SpatialAttention",
    "TSAFusion",
    "attention_map",
    "attention_warp",
    "channel_self_attention",
    "closing",
    "cycle_loss",
    "dilate",
    "erode",
    "gaussian_cross_frame_attention",
    "local_attention",
    "make_footprint",
    "memory_read",
    "morphological_gradient",
    "opening",
    "parallax_losses",
    "photometric_loss",
    "position_attention",
    "received_attention",
    "remove_small_holes",
    "remove_small_objects",
    "smoothness_loss",
]
