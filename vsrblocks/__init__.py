"""Typed, standalone PyTorch building blocks for video super-resolution.

Re-exports only: the root blocks live in their own modules; attention, alignment and recurrent blocks in
the subpackages ``vsrblocks.attention``, ``vsrblocks.align`` (``flow_warp``, ``SPyNet`` ...) and
``vsrblocks.recurrent``.
"""

from vsrblocks.losses import CharbonnierLoss, charbonnier_loss
from vsrblocks.metrics import psnr, ssim
from vsrblocks.position import OfficialPositionEncoding3D, SinCosPositionEncoding3D, sincos_position_encoding_3d
from vsrblocks.residual import ResidualBlockNoBN, ResidualDenseBlock, make_layer
from vsrblocks.shapes import check_shape
from vsrblocks.upsample import PixelShuffleUpsampler

__all__ = [
    "CharbonnierLoss",
    "OfficialPositionEncoding3D",
    "PixelShuffleUpsampler",
    "ResidualBlockNoBN",
    "ResidualDenseBlock",
    "SinCosPositionEncoding3D",
    "charbonnier_loss",
    "check_shape",
    "make_layer",
    "psnr",
    "sincos_position_encoding_3d",
    "ssim",
]
